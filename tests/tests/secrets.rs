//! No secret in any output: fake AWS credentials in the environment and a
//! Pushgateway URL with `user:password@` in the pipeline; neither stdout,
//! stderr (at the default, debug and trace log levels) nor any file below the
//! output root — manifest.json, report.md/html, metrics.prom, summaries,
//! `_SUCCESS` records, `latest` — may hold any of them, on success and on
//! failure.

use std::process::Output;

use tailforge_tests::*;

const ACCESS_KEY_ID: &str = "AKIAFAKETAILFORGE21X";
const SECRET_ACCESS_KEY: &str = "fAkE/SecretAccessKey+tailforge21/doNotLeak0";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEFakeSessionTokenTailforge21DoNotLeakXYZ";
const PUSH_USER: &str = "nightly-bot";
const PUSH_PASSWORD: &str = "pushgw-Pa55word-21";

/// Every secret, and the forms it could leak in (the basic-auth header value).
fn secrets() -> Vec<String> {
    vec![
        ACCESS_KEY_ID.to_string(),
        SECRET_ACCESS_KEY.to_string(),
        SESSION_TOKEN.to_string(),
        PUSH_PASSWORD.to_string(),
        format!("{PUSH_USER}:{PUSH_PASSWORD}"),
        // base64("nightly-bot:pushgw-Pa55word-21"), as sent in `Authorization: Basic …`.
        "bmlnaHRseS1ib3Q6cHVzaGd3LVBhNTV3b3JkLTIx".to_string(),
    ]
}

/// `tailforge args…` with the fake AWS credentials in its environment.
fn run(t: &TestDir, args: &[&str]) -> Output {
    t.cmd()
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("spawn tailforge")
}

/// Asserts that no secret is in `text`; `what` names where it came from.
fn assert_clean(what: &str, text: &str) {
    for s in secrets() {
        assert!(!text.contains(&s), "secret {s:?} found in {what}:\n{text}");
    }
}

fn assert_outputs_clean(t: &TestDir, out: &Output) {
    assert_clean("stdout", &stdout(out));
    assert_clean("stderr", &stderr(out));
    let files = files_below(&t.path("out"));
    assert!(files.len() > 3, "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert_clean(&file.display().to_string(), &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn no_secret_reaches_stdout_stderr_or_any_output_file() {
    let t = small_pipeline("nightly.toml");
    // A run that succeeds and pushes its metrics, at the default log level, at debug and at trace.
    for (verbosity, run_id) in [(None, "default"), (Some("-v"), "debug"), (Some("-vv"), "trace")] {
        let (port, server) = fake_pushgateway("200 OK");
        let gateway = format!("run.pushgateway=http://{PUSH_USER}:{PUSH_PASSWORD}@127.0.0.1:{port}/");
        let mut args: Vec<&str> = verbosity.into_iter().collect();
        args.extend(["run", "nightly.toml", "--date", "2026-11-22", "--run-id", run_id, "--set", &gateway]);
        let out = run(&t, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let request = server.join().unwrap();
        assert!(
            request.contains("bmlnaHRseS1ib3Q6cHVzaGd3LVBhNTV3b3JkLTIx"),
            "the push did send the credentials: {request}"
        );
        assert_outputs_clean(&t, &out);
        // The manifest keeps the setting, without its credentials.
        let manifest = std::fs::read_to_string(t.path(&format!("out/runs/{run_id}/manifest.json"))).unwrap();
        assert!(manifest.contains("127.0.0.1"), "the pushgateway setting is in the manifest: {manifest}");
    }

    // A run that fails on S3 (nothing listens at the endpoint) with the
    // credentials in use: the error names the location, not the credentials.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = t
        .cmd()
        .args([
            "-v",
            "run",
            "nightly.toml",
            "--date",
            "2026-11-23",
            "--set",
            "inputs.events=s3://bucket/events/",
            "--set",
            "storage.max_retries=0",
            "--set",
            &format!("run.pushgateway=http://{PUSH_USER}:{PUSH_PASSWORD}@127.0.0.1:{dead}/"),
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{dead}"))
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("s3://bucket/events"), "{}", stderr(&out));
    assert_outputs_clean(&t, &out);
}
