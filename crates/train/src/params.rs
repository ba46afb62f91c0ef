//! Trainable parameters with seeded initialisation, the Adam optimiser with
//! its state, and both as one safetensors checkpoint.
//!
//! candle's `VarMap` initialises from the device's random generator, which
//! cannot be seeded on the CPU, and `AdamW` keeps its moments private, so a
//! checkpoint could not carry them. Both are small enough to own here: the
//! store draws every initial value from a [`SplitMix64`] seeded by the run
//! seed and the parameter's name, so a run is reproducible on the CPU, and
//! [`Adam`] exposes its moments so that a resumed run continues exactly.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};

use tailforge_core::rng::{SplitMix64, mix64};

/// How a parameter starts.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    /// Glorot/Xavier normal: std = sqrt(2 / (fan_in + fan_out)) of a 2-D
    /// weight, as SASRec.pytorch initialises every matrix.
    XavierNormal,
    /// An embedding table whose row 0 is padding: Xavier normal, row 0 zeros.
    PaddedEmbedding,
}

/// The model's parameters by name, in name order.
#[derive(Debug, Default)]
pub struct ParamStore {
    vars: BTreeMap<String, Var>,
}

/// A uniform draw in (0, 1) from the top 53 bits (never exactly 0, so `ln` is finite).
fn unit(rng: &mut SplitMix64) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller).
pub fn standard_normal(rng: &mut SplitMix64) -> f64 {
    let (u1, u2) = (unit(rng), unit(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A stable 64-bit hash of a parameter name (FNV-1a), to seed its draws.
fn name_hash(name: &str) -> u64 {
    tailforge_core::hash::fnv1a64(name.as_bytes())
}

impl ParamStore {
    /// Creates (or returns, if it exists) the parameter `name` of `shape`.
    pub fn get(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(var) = self.vars.get(name) {
            return Ok(var.as_tensor().clone());
        }
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::XavierNormal | Init::PaddedEmbedding => {
                let (fan_out, fan_in) = match shape {
                    [a, b] => (*a, *b),
                    _ => (n, n),
                };
                let std = (2.0 / (fan_in + fan_out) as f64).sqrt();
                let mut rng = SplitMix64::new(mix64(seed ^ name_hash(name)));
                let mut values: Vec<f32> = (0..n).map(|_| (standard_normal(&mut rng) * std) as f32).collect();
                if let (Init::PaddedEmbedding, [_, width]) = (init, shape) {
                    values[..*width].iter_mut().for_each(|x| *x = 0.0);
                }
                values
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?;
        let tensor = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    /// Replaces the value of the existing parameter `name` (same shape).
    pub fn overwrite(&self, name: &str, value: &Tensor) -> candle_core::Result<()> {
        let Some(var) = self.vars.get(name) else { candle_core::bail!("no parameter {name}") };
        if value.dims() != var.dims() {
            candle_core::bail!("parameter {name} has shape {:?}, the new value {:?}", var.dims(), value.dims());
        }
        var.set(value)
    }

    pub fn vars(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Overwrites every parameter from `tensors` (by name, shapes must match).
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        for (name, var) in &self.vars {
            let Some(t) = tensors.get(name) else { candle_core::bail!("checkpoint lacks parameter {name}") };
            if t.dims() != var.dims() {
                candle_core::bail!("checkpoint parameter {name} has shape {:?}, the model {:?}", t.dims(), var.dims());
            }
            var.set(&t.to_device(var.device())?.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// A copy of every parameter's current value (e.g. the best epoch's weights).
    pub fn snapshot(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        self.vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?))).collect()
    }
}

/// Adam (Kingma & Ba) with optional L2 weight decay added to the gradient,
/// as `torch.optim.Adam(weight_decay=…)`, so the peer and this model train alike.
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps taken (for bias correction).
    pub step: u64,
    /// (parameter, first moment, second moment) by parameter name.
    state: BTreeMap<String, (Var, Var, Var)>,
}

impl Adam {
    pub fn new(params: &ParamStore, lr: f64, beta2: f64, weight_decay: f64) -> candle_core::Result<Adam> {
        let mut state = BTreeMap::new();
        for (name, var) in params.vars() {
            let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
            state.insert(name.clone(), (var.clone(), m, v));
        }
        Ok(Adam { lr, beta1: 0.9, beta2, eps: 1e-8, weight_decay, step: 0, state })
    }

    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let correction1 = 1.0 - b1.powi(t);
        let correction2 = 1.0 - b2.powi(t);
        for (param, m, v) in self.state.values() {
            let Some(g) = grads.get(param) else { continue };
            let g = if self.weight_decay > 0.0 { (g + (param.as_tensor() * self.weight_decay)?)? } else { g.clone() };
            let next_m = ((m.as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let next_v = ((v.as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((&next_v / correction2)?.sqrt()? + self.eps)?;
            let update = ((&next_m / correction1)? / denom)?;
            param.set(&(param.as_tensor() - (update * self.lr)?)?)?;
            m.set(&next_m)?;
            v.set(&next_v)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`adam.m.<param>`, `adam.v.<param>`) for a checkpoint.
    pub fn state_tensors(&self) -> impl Iterator<Item = (String, Tensor)> + '_ {
        self.state.iter().flat_map(|(name, (_, m, v))| {
            [(format!("adam.m.{name}"), m.as_tensor().clone()), (format!("adam.v.{name}"), v.as_tensor().clone())]
        })
    }

    /// Restores the moments from a checkpoint's tensors.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> candle_core::Result<()> {
        self.step = step;
        for (name, (_, m, v)) in &self.state {
            for (prefix, var) in [("adam.m.", m), ("adam.v.", v)] {
                let key = format!("{prefix}{name}");
                let Some(t) = tensors.get(&key) else { candle_core::bail!("checkpoint lacks optimizer state {key}") };
                var.set(&t.to_device(var.device())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialisation_is_seeded_and_xavier_scaled() {
        let dev = Device::Cpu;
        let mut a = ParamStore::default();
        let mut b = ParamStore::default();
        let wa = a.get("w", &[300, 200], Init::XavierNormal, 7, &dev).unwrap();
        let wb = b.get("w", &[300, 200], Init::XavierNormal, 7, &dev).unwrap();
        let va: Vec<f32> = wa.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = wb.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(va, vb, "same seed, same name → same values");
        let mean = va.iter().map(|&x| x as f64).sum::<f64>() / va.len() as f64;
        let var = va.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / va.len() as f64;
        let expected = 2.0 / 500.0;
        assert!(mean.abs() < 0.003, "mean {mean}");
        assert!((var / expected - 1.0).abs() < 0.03, "variance {var} vs {expected}");
        let other = ParamStore::default().get("w", &[300, 200], Init::XavierNormal, 8, &dev).unwrap();
        assert_ne!(va, other.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn adam_minimises_a_quadratic_like_the_reference_update() {
        // One Adam step from x = 1 on f(x) = x² (gradient 2): bias-corrected
        // m̂ = 2, v̂ = 4, so x moves by exactly lr · 2 / (2 + eps).
        let dev = Device::Cpu;
        let mut store = ParamStore::default();
        let x = store.get("x", &[1], Init::Ones, 0, &dev).unwrap();
        let mut adam = Adam::new(&store, 0.1, 0.98, 0.0).unwrap();
        let grads = x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        adam.step(&grads).unwrap();
        let after: Vec<f32> = store.vars().next().unwrap().1.as_tensor().to_vec1().unwrap();
        assert!((after[0] - 0.9).abs() < 1e-6, "{after:?}");
        for _ in 0..300 {
            let t = store.vars().next().unwrap().1.as_tensor().clone();
            let grads = t.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            adam.step(&grads).unwrap();
        }
        let end: Vec<f32> = store.vars().next().unwrap().1.as_tensor().to_vec1().unwrap();
        assert!(end[0].abs() < 0.05, "{end:?}");
    }
}
