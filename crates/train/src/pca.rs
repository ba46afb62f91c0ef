//! Principal components of the item text embeddings, to start the ID
//! embeddings from the text's geometry (`train.id_init = "text_pca"`).
//!
//! LLM-ESR (Liu et al., NeurIPS 2024) initialises the collaborative view's
//! item embeddings with the PCA-reduced language-model embeddings of the
//! items: an item with few interactions then starts near the items its text
//! resembles instead of at a random point, and its few gradient steps refine
//! a meaningful vector. The embeddings here are 384-d MiniLM vectors and the
//! model's are `hidden`-d (64 by default), so the top `hidden` directions are
//! found by subspace iteration on the 384 × 384 covariance — a few hundred
//! million multiply-adds, well under a second.

use tailforge_core::rng::SplitMix64;

use crate::params::standard_normal;

/// Iterations of subspace iteration; the covariance of sentence embeddings
/// has a quickly decaying spectrum, and 60 steps separate its leading
/// directions to far below f32 precision.
const ITERATIONS: usize = 60;

/// Projects `rows` (n × d, all of one width) onto their top `k` principal
/// directions (`k ≤ d`): the centred rows times the leading eigenvectors of
/// their covariance, largest variance first. Returns n × k values, row-major.
pub fn principal_projection(rows: &[&[f32]], k: usize, seed: u64) -> Vec<f32> {
    let n = rows.len();
    let d = rows.first().map_or(0, |r| r.len());
    let k = k.min(d);
    if n == 0 || k == 0 {
        return vec![0.0; n * k];
    }
    let mut mean = vec![0f64; d];
    for r in rows {
        for (m, &x) in mean.iter_mut().zip(r.iter()) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred: Vec<Vec<f64>> =
        rows.iter().map(|r| r.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect()).collect();
    // Covariance (up to the 1/n, which does not move eigenvectors), upper triangle mirrored.
    let mut cov = vec![0f64; d * d];
    for r in &centred {
        for i in 0..d {
            let ri = r[i];
            if ri == 0.0 {
                continue;
            }
            let row = &mut cov[i * d..(i + 1) * d];
            for (c, &rj) in row[i..].iter_mut().zip(&r[i..]) {
                *c += ri * rj;
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            cov[i * d + j] = cov[j * d + i];
        }
    }
    // Subspace iteration: Q ← orth(C·Q), Q is d × k stored as k columns.
    let mut rng = SplitMix64::new(seed);
    let mut basis: Vec<Vec<f64>> = (0..k).map(|_| (0..d).map(|_| standard_normal(&mut rng)).collect()).collect();
    orthonormalize(&mut basis);
    for _ in 0..ITERATIONS {
        basis = basis.iter().map(|q| (0..d).map(|i| dot(&cov[i * d..(i + 1) * d], q)).collect()).collect();
        orthonormalize(&mut basis);
    }
    // Order by captured variance (Rayleigh quotient), largest first, and fix
    // each direction's sign (largest-magnitude coordinate positive) so the
    // result does not depend on the random start.
    let mut scored: Vec<(f64, Vec<f64>)> = basis
        .into_iter()
        .map(|q| {
            let cq: Vec<f64> = (0..d).map(|i| dot(&cov[i * d..(i + 1) * d], &q)).collect();
            (dot(&q, &cq), q)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let directions: Vec<Vec<f64>> = scored
        .into_iter()
        .map(|(_, mut q)| {
            let peak = q.iter().copied().fold(0f64, |m, x| if x.abs() > m.abs() { x } else { m });
            if peak < 0.0 {
                q.iter_mut().for_each(|x| *x = -*x);
            }
            q
        })
        .collect();
    let mut out = Vec::with_capacity(n * k);
    for r in &centred {
        out.extend(directions.iter().map(|q| dot(r, q) as f32));
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram–Schmidt over the vectors, in order.
fn orthonormalize(vectors: &mut [Vec<f64>]) {
    for i in 0..vectors.len() {
        let (done, rest) = vectors.split_at_mut(i);
        let v = &mut rest[0];
        for u in done.iter() {
            let p = dot(v, u);
            v.iter_mut().zip(u).for_each(|(x, y)| *x -= p * y);
        }
        let norm = dot(v, v).sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows spread 3 : 1 along two planted orthogonal directions of a 6-d
    /// space, plus small noise: the projection must find them in that order.
    #[test]
    fn recovers_planted_directions_in_order_of_variance() {
        let s = 1.0 / 2f32.sqrt();
        let (u, v) = ([s, s, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, s, -s, 0.0]);
        let mut rng = SplitMix64::new(11);
        let mut coords = Vec::new();
        let rows: Vec<Vec<f32>> = (0..400)
            .map(|_| {
                let (a, b) = (3.0 * standard_normal(&mut rng) as f32, standard_normal(&mut rng) as f32);
                coords.push((a, b));
                (0..6).map(|i| a * u[i] + b * v[i] + 0.01 * standard_normal(&mut rng) as f32 + 0.5).collect()
            })
            .collect();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let p = principal_projection(&refs, 2, 1);
        assert_eq!(p.len(), 800);
        // Up to sign and the (removed) mean, the first coordinate is a, the second b.
        let corr = |col: usize, pick: fn(&(f32, f32)) -> f32| -> f64 {
            let x: Vec<f64> = (0..400).map(|r| p[r * 2 + col] as f64).collect();
            let y: Vec<f64> = coords.iter().map(|c| pick(c) as f64).collect();
            let (mx, my) = (x.iter().sum::<f64>() / 400.0, y.iter().sum::<f64>() / 400.0);
            let cov: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
            let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
            let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
            cov / (vx * vy).sqrt()
        };
        assert!(corr(0, |c| c.0).abs() > 0.999, "first component is the 3× direction");
        assert!(corr(1, |c| c.1).abs() > 0.999, "second component is the 1× direction");
        // Centred: each column sums to about zero.
        for col in 0..2 {
            let sum: f32 = (0..400).map(|r| p[r * 2 + col]).sum();
            assert!(sum.abs() < 1e-2, "column {col} sums to {sum}");
        }
        // Independent of the random start.
        let q = principal_projection(&refs, 2, 99);
        for (a, b) in p.iter().zip(&q) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
