//! S3 for real: a moto S3-compatible server on 127.0.0.1 (installed into
//! `.venv` by `make setup`), driven through the AWS_* environment exactly as
//! a user would. The analyze outputs read from and written to S3 must equal
//! the local run's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
            "sequences.parquet",
            "split.parquet",
            "summary.json",
            "tail_items.parquet"
        ]
    );
    for table in ["item_stats", "tail_items", "item_text", "sequences", "split"] {
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
