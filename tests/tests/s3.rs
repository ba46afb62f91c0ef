//! S3 for real: a moto S3-compatible server on 127.0.0.1 (installed into
//! `.venv` by `make setup`), driven through the AWS_* environment exactly as
//! a user would. The analyze outputs read from and written to S3 must equal
//! the local run's; the pipeline job runs there, and survives the endpoint
//! going away mid-run (retries, or a failed run that a rerun resumes).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tailforge_tests::*;

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_bin(name: &str) -> PathBuf {
    let p = repo_root().join(".venv").join("bin").join(name);
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

fn start_moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(venv_bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

/// CreateBucket with a plain HTTP PUT (moto does not check signatures).
fn create_bucket(port: u16, bucket: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "CreateBucket failed: {response}");
}

fn with_s3_env(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
}

fn run_s3(t: &TestDir, port: u16, args: &[&str]) {
    let out = with_s3_env(&mut t.cmd(), port).args(args).output().unwrap();
    assert!(out.status.success(), "tailforge {} failed:\n{}", args.join(" "), stderr(&out));
}

/// Runs a boto3 snippet against the moto server: `s3` is a ready client,
/// `args` holds the remaining command-line arguments. Returns stdout.
fn boto3(port: u16, what: &str, body: &str, args: &[&str]) -> String {
    let script = format!(
        "import sys, os, boto3\nargs = sys.argv[1:]\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', \
         aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{body}"
    );
    let out = Command::new(venv_bin("python")).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    stdout(&out)
}

/// Downloads every object under `prefix` into `dest`; returns the keys below `prefix`, sorted.
fn download(port: u16, bucket: &str, prefix: &str, dest: &std::path::Path) -> Vec<String> {
    let body = r#"
bucket, prefix, dest = args
for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
    rel = obj["Key"][len(prefix):].lstrip("/")
    os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
    s3.download_file(bucket, obj["Key"], os.path.join(dest, rel))
    print(rel)
"#;
    let mut keys: Vec<String> =
        boto3(port, "download", body, &[bucket, prefix, dest.to_str().unwrap()]).lines().map(str::to_string).collect();
    keys.sort();
    keys
}

fn summary_without_timings(path: &std::path::Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("timings");
    o.remove("input_files");
    v
}

#[test]
fn analyze_on_s3_equals_the_local_run() {
    let moto = start_moto();
    create_bucket(moto.port, "tailforge");
    let t = TestDir::new();
    let demo_args = [
        "demo-data",
        "--users",
        "300",
        "--items",
        "200",
        "--events",
        "6000",
        "--seed",
        "7",
        "--events-per-file",
        "2500",
    ];

    // Local run.
    t.run_ok(&[&demo_args[..], &["--out", "local"]].concat());
    t.run_ok(&["analyze", "--events", "local/events/", "--items", "local/items/", "--out", "local-out"]);

    // The same data generated straight to S3, analyzed S3 → S3; the events
    // input given as a glob, which object store URLs support too.
    run_s3(&t, moto.port, &[&demo_args[..], &["--out", "s3://tailforge/demo"]].concat());
    run_s3(
        &t,
        moto.port,
        &[
            "analyze",
            "--events",
            "s3://tailforge/demo/events/*.parquet",
            "--items",
            "s3://tailforge/demo/items",
            "--out",
            "s3://tailforge/out",
        ],
    );

    let keys = download(moto.port, "tailforge", "out/", &t.path("s3-out"));
    assert_eq!(
        keys,
        [
            "_SUCCESS",
            "item_stats.parquet",
            "item_text.parquet",
            "neighbors.parquet",
            "sequences.parquet",
            "split.parquet",
            "summary.json",
            "tail_items.parquet"
        ]
    );
    for table in ["item_stats", "tail_items", "item_text", "sequences", "split", "neighbors"] {
        let local = read_parquet(&t.path(&format!("local-out/{table}.parquet")));
        let remote = read_parquet(&t.path(&format!("s3-out/{table}.parquet")));
        assert_eq!(local, remote, "{table} differs between the local and the S3 run");
    }
    let s = summary_without_timings(&t.path("s3-out/summary.json"));
    assert_eq!(s, summary_without_timings(&t.path("local-out/summary.json")));
    assert_eq!(s["events"], 6000);
    let files =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(t.path("s3-out/summary.json")).unwrap())
            .unwrap()["input_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["url"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
    assert!(files.iter().any(|f| f == "s3://tailforge/demo/events/part-00002.parquet"), "{files:?}");
}

#[test]
fn the_pipeline_job_runs_against_s3_and_its_lock_holds_there() {
    let moto = start_moto();
    create_bucket(moto.port, "nightly");
    let t = TestDir::new();
    run_s3(
        &t,
        moto.port,
        &[
            "demo-data",
            "--users",
            "200",
            "--items",
            "150",
            "--events",
            "5000",
            "--seed",
            "3",
            "--out",
            "s3://nightly/in/dt=2026-11-22",
        ],
    );
    std::fs::write(
        t.path("p.toml"),
        format!(
            "output = \"s3://nightly/tf\"\n[inputs]\nevents = \"s3://nightly/in/dt={{date}}/events/\"\nitems = \"s3://nightly/in/dt={{date}}/items/\"\n\
             [generate]\nmodel = {:?}\nlimit = 2\nparallel = 2\nn_threads = 1\n\
             [train]\nvariants = [\"fused\"]\nepochs = 1\nmaxlen = 20\nencoder = {:?}\n",
            smollm2().to_str().unwrap(),
            repo_root().join("models/all-MiniLM-L6-v2").to_str().unwrap()
        ),
    )
    .unwrap();
    run_s3(&t, moto.port, &["run", "p.toml", "--date", "2026-11-22"]);
    let keys = download(moto.port, "nightly", "tf/", &t.path("tf"));
    for k in [
        "latest",
        "metrics.prom",
        "runs/2026-11-22/manifest.json",
        "runs/2026-11-22/analyze/_SUCCESS",
        "runs/2026-11-22/evaluate/metrics.json",
        "runs/2026-11-22/generate/_SUCCESS",
        "runs/2026-11-22/generate/summary.json",
        "runs/2026-11-22/train/fused/_SUCCESS",
        "runs/2026-11-22/train/fused/metrics.json",
        "runs/2026-11-22/train/fused/checkpoints/last.safetensors",
        "runs/2026-11-22/train/fused/recommendations.parquet",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
    }
    assert!(!keys.iter().any(|x| x == "_lock"), "lock released");
    assert!(keys.iter().any(|x| x.starts_with("cache/generate/")), "generated rows cached on S3: {keys:?}");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("tf/runs/2026-11-22/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "succeeded");
    assert!(m["input_files"][0]["url"].as_str().unwrap().starts_with("s3://nightly/in/dt=2026-11-22/"), "{m}");

    // A second run while a lock object exists is refused (conditional put on S3).
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    std::fs::write(
        t.path("lock.json"),
        format!("{{\"run_id\":\"other\",\"pid\":1,\"host\":\"h\",\"acquired_at\":{now}}}"),
    )
    .unwrap();
    upload(moto.port, "nightly", "tf/_lock", &t.path("lock.json"));
    let out = with_s3_env(&mut t.cmd(), moto.port).args(["run", "p.toml", "--date", "2026-11-22"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("another run holds the lock"), "{}", stderr(&out));
}

fn upload(port: u16, bucket: &str, key: &str, file: &std::path::Path) {
    boto3(
        port,
        "upload",
        "bucket, key, path = args\ns3.upload_file(path, bucket, key)\n",
        &[bucket, key, file.to_str().unwrap()],
    );
}

/// Whether an object exists in moto under `prefix` (a whole key or a folder):
/// a ListObjectsV2 GET that carries an Authorization header (moto wants one,
/// but does not check the signature).
fn object_exists(port: u16, bucket: &str, prefix: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let request = format!(
        "GET /{bucket}?list-type=2&max-keys=1&prefix={prefix} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20261123/us-east-1/s3/aws4_request, SignedHeaders=host, \
         Signature=0\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
        && response.contains("<Key>")
}

/// The S3 endpoint as tailforge sees it: a TCP proxy on its own port in front
/// of moto. Taking it down resets every open connection and refuses new ones
/// — to the client, exactly a server that stopped — while moto keeps the
/// objects written before, as a restarted S3 service keeps its data (moto
/// itself is in-memory, so stopping moto would also lose them).
struct FlakyEndpoint {
    port: u16,
    state: Arc<EndpointState>,
}

struct EndpointState {
    upstream: u16,
    down: AtomicBool,
    /// Take the endpoint down when the next request arrives: `Some(Some(d))`
    /// for `d`, `Some(None)` until [`FlakyEndpoint::up`].
    armed: Mutex<Option<Option<Duration>>>,
    /// Both ends of every open connection, to reset them at an outage.
    connections: Mutex<Vec<TcpStream>>,
    outages: AtomicUsize,
    stop: AtomicBool,
}

impl FlakyEndpoint {
    fn start(upstream: u16) -> FlakyEndpoint {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let state = Arc::new(EndpointState {
            upstream,
            down: AtomicBool::new(false),
            armed: Mutex::new(None),
            connections: Mutex::new(Vec::new()),
            outages: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&state);
        std::thread::spawn(move || s.serve(port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        FlakyEndpoint { port, state }
    }

    /// The next request through the endpoint takes it down (see `armed`).
    fn fail_next_request(&self, outage: Option<Duration>) {
        *self.state.armed.lock().unwrap() = Some(outage);
    }

    fn up(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }

    fn outages(&self) -> usize {
        self.state.outages.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyEndpoint {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

impl EndpointState {
    fn serve(self: Arc<Self>, port: u16) {
        let mut listener: Option<TcpListener> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if self.down.load(Ordering::SeqCst) {
                listener = None; // closed: connections are refused
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let Some(l) = listener.as_ref() else {
                // std sets SO_REUSEADDR, so the port can be bound again at once.
                if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                    l.set_nonblocking(true).unwrap();
                    listener = Some(l);
                }
                continue;
            };
            match l.accept() {
                Ok((client, _)) => {
                    let s = Arc::clone(&self);
                    std::thread::spawn(move || s.forward(client));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    fn forward(self: Arc<Self>, client: TcpStream) {
        client.set_nonblocking(false).unwrap();
        let Ok(server) = TcpStream::connect(("127.0.0.1", self.upstream)) else { return };
        {
            let mut open = self.connections.lock().unwrap();
            open.push(client.try_clone().unwrap());
            open.push(server.try_clone().unwrap());
        }
        let (mut from_server, mut to_client) = (server.try_clone().unwrap(), client.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_server, &mut to_client);
            let _ = to_client.shutdown(std::net::Shutdown::Write);
        });
        let (mut from_client, mut to_server) = (client, server);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(outage) = self.armed.lock().unwrap().take() {
                self.go_down(outage); // this request is lost with its connection
                return;
            }
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    }

    fn go_down(self: &Arc<Self>, outage: Option<Duration>) {
        self.down.store(true, Ordering::SeqCst);
        self.outages.fetch_add(1, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(outage) = outage {
            let s = Arc::clone(self);
            std::thread::spawn(move || {
                std::thread::sleep(outage);
                s.down.store(false, Ordering::SeqCst);
            });
        }
    }
}

/// Rows of every generated shard of a run as (item_id, description), sorted.
fn generated_rows(dir: &std::path::Path) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir.join("generated")).unwrap() {
        let b = read_parquet(&entry.unwrap().path());
        let ids = b.column_by_name("item_id").unwrap();
        let ids = ids.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        let text = b.column_by_name("description").unwrap();
        let text = text.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        rows.extend((0..b.num_rows()).map(|i| (ids.value(i), text.value(i).to_string())));
    }
    rows.sort();
    rows
}

/// Starts `tailforge run`, waits until an object exists under `ready` (a key
/// prefix in moto), then lets the endpoint fail on the next request; returns
/// the finished process.
fn run_with_outage(
    t: &TestDir,
    moto: u16,
    endpoint: &FlakyEndpoint,
    (run_id, ready): (&str, &str),
    outage: Option<Duration>,
    extra: &[&str],
) -> std::process::Output {
    let mut child = with_s3_env(&mut t.cmd(), endpoint.port)
        .args(["run", "p.toml", "--run-id", run_id])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !object_exists(moto, "flaky", ready) {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!("run {run_id} ended before {ready} was written:\n{}", stderr(&out));
        }
        assert!(Instant::now() < deadline, "run {run_id} did not write {ready}");
        std::thread::sleep(Duration::from_millis(50));
    }
    endpoint.fail_next_request(outage);
    child.wait_with_output().unwrap()
}

#[test]
fn a_run_rides_out_an_s3_outage_and_a_run_that_gives_up_resumes() {
    let moto = start_moto();
    create_bucket(moto.port, "flaky");
    let endpoint = FlakyEndpoint::start(moto.port);
    let t = TestDir::new();
    run_s3(
        &t,
        moto.port,
        &["demo-data", "--users", "150", "--items", "120", "--events", "4000", "--seed", "5", "--out", "s3://flaky/in"],
    );
    // Generation without the cross-run cache and one item per shard, so the
    // second run really generates and the outage falls between shards; one
    // sequence at a time, so that regenerated items are byte-identical too
    // (batched llama.cpp kernels differ in the last bits between batch
    // compositions, and a resumed item has other neighbours).
    std::fs::write(
        t.path("p.toml"),
        format!(
            "output = \"s3://flaky/tf\"\n[inputs]\nevents = \"s3://flaky/in/events/\"\nitems = \"s3://flaky/in/items/\"\n\
             [generate]\nmodel = {:?}\nlimit = 4\nparallel = 1\nn_threads = 1\nshard_size = 1\nuse_cache = false\n\
             [train]\nvariants = [\"id\"]\nepochs = 2\nmaxlen = 20\n",
            smollm2().to_str().unwrap(),
        ),
    )
    .unwrap();

    // 1. A 3 s outage: the object store client retries (the defaults ride out
    //    at least 10 s) and the run succeeds.
    let ready = ("a", "tf/runs/a/analyze/_SUCCESS");
    let out = run_with_outage(&t, moto.port, &endpoint, ready, Some(Duration::from_secs(3)), &[]);
    assert!(out.status.success(), "run a failed:\n{}", stderr(&out));
    assert_eq!(endpoint.outages(), 1, "the outage must have hit a request of the run");

    // 2. An outage, while generating, longer than the retries allow: the run
    //    fails with the location in the error, and leaves its lock behind.
    let give_up_fast = [
        "--set",
        "storage.max_retries=2",
        "--set",
        "storage.init_backoff_ms=100",
        "--set",
        "storage.retry_timeout_secs=2",
    ];
    let ready = ("b", "tf/runs/b/generate/generated/");
    let out = run_with_outage(&t, moto.port, &endpoint, ready, None, &give_up_fast);
    assert_eq!(endpoint.outages(), 2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("s3://flaky/tf/"), "the error names the location: {}", stderr(&out));
    endpoint.up();
    assert!(object_exists(moto.port, "flaky", "tf/_lock"), "a run cut off from the store cannot release its lock");
    assert!(!object_exists(moto.port, "flaky", "tf/runs/b/generate/_SUCCESS"));
    assert!(!object_exists(moto.port, "flaky", "tf/runs/b/train/"), "the run stopped in generate");

    //    The rerun finds the lock of a run whose process is gone (this host)
    //    and takes it over at once, however fresh, and resumes: analyze is
    //    skipped, generation and training finish, and every output equals
    //    the run that never failed.
    let out = with_s3_env(&mut t.cmd(), endpoint.port).args(["run", "p.toml", "--run-id", "b"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("taking over the run lock of a dead or stale run"), "{}", stderr(&out));

    download(moto.port, "flaky", "tf/runs/", &t.path("runs"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("runs/b/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["status"], "succeeded", "{manifest}");
    let analyze = manifest["stages"].as_array().unwrap().iter().find(|s| s["name"] == "analyze").unwrap();
    assert_eq!(analyze["status"], "skipped", "{manifest}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("runs/b/generate/summary.json")).unwrap()).unwrap();
    assert!(summary["skipped"].as_u64().unwrap() >= 1, "generation resumed after the shards written: {summary}");
    let (a, b) = (generated_rows(&t.path("runs/a/generate")), generated_rows(&t.path("runs/b/generate")));
    let mut ids: Vec<i64> = b.iter().map(|r| r.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), b.len(), "no item generated twice");
    assert_eq!(a, b, "the resumed run generated exactly what the uninterrupted one did");
    assert!(b.len() >= 3, "most of the 4 items accepted: {b:?}");
    for table in ["analyze/sequences.parquet", "analyze/split.parquet", "train/id/recommendations.parquet"] {
        assert_eq!(
            read_parquet(&t.path(&format!("runs/a/{table}"))),
            read_parquet(&t.path(&format!("runs/b/{table}"))),
            "{table} differs between the run that rode out the outage and the resumed one"
        );
    }
}

/// `generate` of the first 12 MovieLens tail items into `out` with extra arguments.
fn generate_args(out: &str, extra: &[&str]) -> Vec<String> {
    let model = smollm2();
    let mut v: Vec<String> = ["generate", "--input", "out", "--out", out, "--limit", "12", "--parallel", "1"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--threads".into(), "1".into(), "--model".into(), model.display().to_string()])
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn parse_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Sharded generation as a scheduler runs it: three workers at once against
/// one S3 root and one cache, then `--merge`. The merged output must hold the
/// same rows as one process generating everything (one sequence at a time,
/// so each item's tokens do not depend on its batch-mates), and a rerun with
/// another worker count must reuse every item from the cache.
#[test]
fn three_shards_at_once_on_s3_merge_to_the_single_process_output() {
    let _llm = llm_lock();
    let moto = start_moto();
    create_bucket(moto.port, "workers");
    let t = TestDir::new();
    analyze_movielens(&t, &[]);
    let single: Vec<String> = generate_args("single", &[]);
    t.run_ok(&single.iter().map(String::as_str).collect::<Vec<_>>());

    let cache = ["--set", "generate.cache=s3://workers/cache"];
    let workers: Vec<_> = (0..3)
        .map(|k| {
            let shard = format!("{k}/3");
            let args = generate_args("s3://workers/gen", &[&["--shard", shard.as_str()], &cache[..]].concat());
            with_s3_env(&mut t.cmd(), moto.port)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (k, w) in workers.into_iter().enumerate() {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker {k}/3 failed:\n{}", stderr(&out));
        assert!(stdout(&out).contains(&format!("shard {k}/3:")), "{}", stdout(&out));
    }
    // Not merged yet: nothing at the top of the output.
    assert!(!object_exists(moto.port, "workers", "gen/_SUCCESS"));
    let merged = with_s3_env(&mut t.cmd(), moto.port)
        .args(["generate", "--out", "s3://workers/gen", "--merge"])
        .output()
        .unwrap();
    assert!(merged.status.success(), "merge failed:\n{}", stderr(&merged));
    assert!(stdout(&merged).contains("merged 3 shards"), "{}", stdout(&merged));

    let keys = download(moto.port, "workers", "gen/", &t.path("gen"));
    assert!(keys.iter().any(|k| k == "_SUCCESS") && keys.iter().any(|k| k == "shard-2-of-3/_SUCCESS"), "{keys:?}");
    let mut items_per_shard = Vec::new();
    for k in 0..3 {
        let s = parse_json(&t.path(&format!("gen/shard-{k}-of-3/summary.json")));
        assert_eq!(s["shard"], format!("{k}/3"));
        assert_eq!(s["reused_from_cache"], 0, "worker {k} generated its items");
        items_per_shard.push(s["items"].as_u64().unwrap());
    }
    assert_eq!(items_per_shard.iter().sum::<u64>(), 12, "the parts partition the items: {items_per_shard:?}");
    assert!(items_per_shard.iter().all(|&n| n > 0), "{items_per_shard:?}");
    let s = parse_json(&t.path("gen/summary.json"));
    assert_eq!((s["items"].as_u64(), s["merged_shards"].as_u64()), (Some(12), Some(3)));
    let single_summary = parse_json(&t.path("single/summary.json"));
    assert_eq!(s["generated_rows"], single_summary["generated_rows"]);
    assert_eq!(s["fingerprint"], single_summary["fingerprint"]);
    // generation_ms is wall time; every other column must match.
    for dir in ["generated", "rejects"] {
        let whole = shard_rows(&t.path(&format!("single/{dir}")), &["generation_ms"]);
        let joined = shard_rows(&t.path(&format!("gen/{dir}")), &["generation_ms"]);
        assert_eq!(whole, joined, "{dir}: the merge of 3 workers differs from one process");
    }
    assert_eq!(shard_rows(&t.path("gen/generated"), &[]).len() + shard_rows(&t.path("gen/rejects"), &[]).len(), 12);

    // Two workers now, into a new output, sharing the cache: nothing is generated again.
    for k in 0..2 {
        let shard = format!("{k}/2");
        let args = generate_args("s3://workers/gen2", &[&["--shard", shard.as_str()], &cache[..]].concat());
        let out = with_s3_env(&mut t.cmd(), moto.port).args(&args).output().unwrap();
        assert!(out.status.success(), "worker {k}/2 failed:\n{}", stderr(&out));
        assert!(stdout(&out).contains(": 0 accepted, 0 rejected"), "worker {k}/2 generated:\n{}", stdout(&out));
    }
    run_s3(&t, moto.port, &["generate", "--out", "s3://workers/gen2", "--merge"]);
    download(moto.port, "workers", "gen2/", &t.path("gen2"));
    let s = parse_json(&t.path("gen2/summary.json"));
    assert_eq!((s["reused_from_cache"].as_u64(), s["merged_shards"].as_u64()), (Some(12), Some(2)));
    for dir in ["generated", "rejects"] {
        assert_eq!(
            shard_rows(&t.path(&format!("single/{dir}")), &["generation_ms"]),
            shard_rows(&t.path(&format!("gen2/{dir}")), &["generation_ms"]),
            "{dir}: two workers from the cache"
        );
    }
}

#[test]
fn a_merge_names_the_shards_that_have_not_finished_and_run_refuses_a_shard() {
    let t = TestDir::new();
    std::fs::create_dir_all(t.path("gen/shard-0-of-2")).unwrap();
    std::fs::write(t.path("gen/shard-0-of-2/_SUCCESS"), b"").unwrap();
    let err = t.run_fails(&["generate", "--out", "gen", "--merge"], 2);
    assert!(err.contains("shards 1/2 have not finished"), "{err}");
    let err = t.run_fails(&["generate", "--out", "gen", "--shard", "2/2", "--input", "x"], 2);
    assert!(err.contains("must be below N = 2"), "{err}");
    let demo = repo_root().join("pipelines/demo.toml");
    let err = t.run_fails(&["run", demo.to_str().unwrap(), "--set", "generate.shard=0/2"], 2);
    assert!(err.contains("generate.shard") && err.contains("docs/scaling.md"), "{err}");
}
