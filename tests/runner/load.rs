//! `gauntlet load` end to end against `gauntlet sim` processes: two shards merged equal one
//! generator's run; a 600 ms stall planted on the server (SIGSTOP) shows in the open loop's
//! tail and not in the closed loop's, with the same four connections each (coordinated
//! omission); the regression gate
//! catches a simulator 20 ms slower and passes a report against itself; bad input is one
//! error with exit 2 or 3.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Running, Scratch};

/// A simulator process (optionally with a config), and its URL once it listens.
fn sim(s: &Scratch, config: Option<&str>) -> (Running, String) {
    let mut args = vec!["sim".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
    if let Some(c) = config {
        let path = s.path(&format!("sim-{}.yaml", s.token().len() + c.len()));
        std::fs::write(&path, c).unwrap();
        args.extend(["--config".into(), path.display().to_string()]);
    }
    let run = s.gauntlet().args(&args).timeout(Duration::from_secs(120)).spawn();
    let started = Instant::now();
    loop {
        if let Some(rest) = run.stdout_so_far().split("listening on ").nth(1) {
            let url = rest.split_whitespace().next().unwrap_or("").to_owned();
            return (run, url);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the simulator did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the simulator at `url` has answered a chat request yet.
fn answered(url: &str) -> bool {
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap();
    crate::util::http_get(port, "/admin/journal").is_some_and(|(_, body)| body.contains("\"outcome\""))
}

fn report(path: std::path::PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn point(v: &Value) -> &Value {
    &v["points"][0]
}

#[test]
fn two_shards_merge_to_what_one_generator_measures() {
    let s = Scratch::new("load-shards");
    let (_sim, url) = sim(&s, None);
    let common = [
        "load",
        "--url",
        &url,
        "--profile",
        "constant:100",
        "--requests",
        "100",
        "--warmup",
        "0",
    ];
    let one = s
        .gauntlet()
        .args(&common)
        .args(&["--out", &s.path("one").display().to_string()])
        .run();
    one.assert_code(0);
    // Two generators side by side, as an Indexed Job's pods would run.
    let shards: Vec<Running> = (0..2)
        .map(|i| {
            s.gauntlet()
                .args(&common)
                .args(&[
                    "--shard",
                    &format!("{i}/2"),
                    "--out",
                    &s.path(&format!("shard{i}")).display().to_string(),
                ])
                .spawn()
        })
        .collect();
    for r in shards {
        r.wait().assert_code(0);
    }
    let merged = s
        .gauntlet()
        .args(&[
            "load",
            "merge",
            &s.path("shard0/report.json").display().to_string(),
            &s.path("shard1/report.json").display().to_string(),
            "--out",
            &s.path("merged").display().to_string(),
        ])
        .run();
    merged.assert_code(0);
    let (a, b) = (
        report(s.path("shard0/report.json")),
        report(s.path("shard1/report.json")),
    );
    assert_eq!(point(&a)["completed"], 50, "each shard offers half: {}", point(&a));
    assert_eq!(point(&a)["profile"], "constant:50");
    let (single, m) = (report(s.path("one/report.json")), report(s.path("merged/report.json")));
    let (sp, mp) = (point(&single), point(&m));
    assert_eq!(sp["completed"], 100);
    assert_eq!(mp["completed"], 100, "the shards' requests add up: {mp}");
    assert_eq!(mp["failed"], 0);
    assert_eq!(
        mp["total_input_tokens"].as_u64(),
        Some(point(&a)["total_input_tokens"].as_u64().unwrap() + point(&b)["total_input_tokens"].as_u64().unwrap())
    );
    // Both offered 100 requests a second for one second: the merged throughput is the
    // single run's, not the sum of two shards' rates nor their mean.
    let (st, mt) = (
        sp["request_throughput"].as_f64().unwrap(),
        mp["request_throughput"].as_f64().unwrap(),
    );
    assert!(
        (mt - st).abs() / st < 0.25,
        "merged {mt:.1} req/s, one generator {st:.1} req/s"
    );
    for f in ["summary.txt", "latency_over_time.svg", "latency_percentiles.svg"] {
        assert!(s.path("merged").join(f).is_file(), "merge wrote no {f}");
    }
}

#[test]
fn the_open_loop_counts_a_stall_that_the_closed_loop_hides() {
    let s = Scratch::new("load-stall");
    let (sim, url) = sim(&s, None);
    let stall = |run: Running| {
        // The stall starts once requests reach the simulator, well inside the 3 s measured.
        let started = Instant::now();
        while !answered(&url) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no request reached the simulator"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: signals to the simulator process this test started and still holds.
        unsafe { libc::kill(sim.pid() as i32, libc::SIGSTOP) };
        // The planted fault's length, not a wait for readiness.
        std::thread::sleep(Duration::from_millis(600));
        // SAFETY: as above.
        unsafe { libc::kill(sim.pid() as i32, libc::SIGCONT) };
        run.wait()
    };
    let open_dir = s.path("open").display().to_string();
    let open = s
        .gauntlet()
        // Four connections at most, as the closed loop has: during the stall the generator
        // cannot send either, and only counting from the intended send time shows the wait.
        .args(&[
            "load",
            "--url",
            &url,
            "--profile",
            "constant:200",
            "--duration",
            "3",
            "--warmup",
            "0",
        ])
        .args(&["--max-inflight", "4"])
        .args(&["--out", &open_dir])
        .spawn();
    stall(open).assert_code(0);
    let closed_dir = s.path("closed").display().to_string();
    let closed = s
        .gauntlet()
        .args(&[
            "load",
            "--url",
            &url,
            "--profile",
            "concurrent:4",
            "--duration",
            "3",
            "--warmup",
            "0",
        ])
        .args(&["--out", &closed_dir])
        .spawn();
    stall(closed).assert_code(0);
    let open = report(s.path("open/report.json"));
    let closed = report(s.path("closed/report.json"));
    let (op99, cp99) = (
        point(&open)["p99_e2el_ms"].as_f64().unwrap(),
        point(&closed)["p99_e2el_ms"].as_f64().unwrap(),
    );
    // 600 ms without answers at 200 requests a second: the ~120 requests due in it waited
    // up to 600 ms, 5 % of the run waited over 300 ms, so its P99 is past 300 ms.
    assert!(
        op99 >= 300.0,
        "open loop P99 {op99} ms after a 600 ms stall (P50 {}, send lag P99 {} ms)",
        point(&open)["p50_e2el_ms"],
        point(&open)["p99_send_lag_ms"]
    );
    // Four workers saw four slow requests among thousands: the stall is not in their P99.
    assert!(
        cp99 < op99 / 2.0,
        "closed loop P99 {cp99} ms vs open loop {op99} ms: the closed loop should hide the stall"
    );
    let done = point(&closed)["completed"].as_u64().unwrap();
    assert!(done > 400, "the closed loop completed only {done} requests in 3 s");
}

#[test]
fn the_gate_catches_a_20ms_slower_server_and_not_the_same_report() {
    let s = Scratch::new("load-gate");
    let (_fast, fast) = sim(&s, None);
    let (_slow, slow) = sim(
        &s,
        Some("deployments:\n  - name: default\n    behaviour:\n      latency_ms: 20\n"),
    );
    let common = [
        "load",
        "--profile",
        "synchronous",
        "--requests",
        "150",
        "--warmup",
        "0.2",
    ];
    let base = s.path("base").display().to_string();
    s.gauntlet()
        .args(&common)
        .args(&["--url", &fast, "--out", &base])
        .run()
        .assert_code(0);
    let base_json = s.path("base/report.json").display().to_string();
    let slower = s
        .gauntlet()
        .args(&common)
        .args(&[
            "--url",
            &slow,
            "--out",
            &s.path("slow").display().to_string(),
            "--baseline",
            &base_json,
        ])
        .run();
    slower
        .assert_code(1)
        .assert_stdout_has("REGRESSION")
        .assert_stderr_has("slower than the baseline");
    let same = s.gauntlet().args(&["load", "compare", &base_json, &base_json]).run();
    same.assert_code(0).assert_stdout_has(": ok");
}

#[test]
fn bad_input_is_one_error_with_exit_2_or_3() {
    let s = Scratch::new("load-bad");
    // Nothing listens on a port just closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = s.gauntlet().args(&["load", "--url", &closed, "--model", "m"]).run();
    out.assert_code(3).assert_stderr_has("cannot reach");
    let out = s
        .gauntlet()
        .args(&["load", "--url", &closed, "--profile", "constant:0"])
        .run();
    out.assert_code(2).assert_stderr_has("above 0");
    let out = s
        .gauntlet()
        .args(&["load", "--url", &closed, "--profile", "warp:9"])
        .run();
    out.assert_code(2).assert_stderr_has("unknown profile");
    std::fs::write(s.path("p.jsonl"), "{\"prompt\": \"ok\"}\n{\"prompt\": 7}\n").unwrap();
    let out = s
        .gauntlet()
        .args(&[
            "load",
            "--url",
            &closed,
            "--prompts",
            &s.path("p.jsonl").display().to_string(),
        ])
        .run();
    out.assert_code(2).assert_stderr_has("p.jsonl:2:");
    // A server that answers 200 with something that is not a chat completion.
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", garbage.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut c, _)) = garbage.accept() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\nconnection: close\r\n\r\n<html>teapot</html>\n");
        }
    });
    let out = s.gauntlet().args(&["load", "--url", &url, "--model", "m"]).run();
    out.assert_code(3).assert_stderr_has("not an OpenAI chat completion");
    let _ = server.join();
    assert_eq!(out.stderr.matches("error").count(), 1, "one error:\n{}", out.stderr);
}

#[test]
fn a_failing_server_stops_the_run_at_the_error_budget_with_exit_1() {
    let s = Scratch::new("load-budget");
    let failing = "deployments:\n  - name: default\n    behaviour:\n      fault: {kind: error, status: 503}\n";
    let (_sim, url) = sim(&s, Some(failing));
    let out = s
        .gauntlet()
        .args(&[
            "load",
            "--url",
            &url,
            "--model",
            "m",
            "--profile",
            "constant:50",
            "--duration",
            "30",
        ])
        .args(&["--warmup", "0", "--out", &s.path("out").display().to_string()])
        .run();
    out.assert_code(1).assert_stderr_has("past --max-error-rate 50 %");
    let r = report(s.path("out/report.json"));
    let failed = point(&r)["errors"]["http_503"].as_u64().unwrap();
    // Stopped after the first 20 answers, not after 30 s of them.
    assert!((20..200).contains(&failed), "{failed} failures before stopping");
    assert_eq!(point(&r)["completed"], 0, "no 503 counted as a success");
}
