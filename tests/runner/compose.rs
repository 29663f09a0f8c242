//! `gauntlet compose` against a real Docker Engine and Docker Compose: the file it writes
//! validates, comes up healthy in dependency order (health checks running inside the images),
//! serves on the published loopback port, reaches the other services by name, and carries the
//! keys only through `.env`. The stack is the gauntlet image alone (a simulator as the
//! router, behind a builtin simulator), built from the binary under test, so it runs in
//! seconds and needs neither LiteLLM nor Redis.
//!
//! Needs a Docker Engine and Compose (`docker compose` or `docker-compose`): without them this
//! says so and passes (unless `GAUNTLET_REQUIRE=all`). Everything
//! runs under a project name of its own and is brought down (`down -v`) on every way out.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::BIN;

const MANIFEST: &str = r#"
[stack]
router = "router"
router_config = "router.yaml"

[services.sim]
builtin = "sim"
health = { http = "/health" }

[services.router]
command = ["/gauntlet", "sim", "--listen", "${bind}:${port}", "--deployment", "default"]
depends_on = ["sim"]
health = { http = "/health" }
image = "gauntlet"
env = { UPSTREAM = "${sim.url}/d/default/v1", ROUTER_CONFIG = "${router_config}", PRICE = "$5" }
"#;

const ROUTER: &str = r#"
model_list:
  - model_name: default
    litellm_params: {model: openai/default, api_base: "${sim.url}/d/default/v1", api_key: "${provider_key}"}
    model_info: {id: default}
general_settings:
  master_key: "${master_key}"
"#;

/// A cold gauntlet image build strips and packs the binary; the stack itself is up in seconds.
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(240);
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

/// `docker compose` (v2) or `docker-compose` (v1), whichever answers.
fn compose_tool() -> Option<Vec<String>> {
    [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|argv| {
            Command::new(argv[0])
                .args(&argv[1..])
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|argv| argv.into_iter().map(String::from).collect())
}

fn show(what: &str, o: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a command to its end, killed after `bound`.
fn run(cmd: &mut Command, bound: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// The project: brought down, volumes and all, however the test ends.
struct Project {
    tool: Vec<String>,
    name: String,
    file: PathBuf,
    port: u16,
}

impl Project {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.tool[0]);
        c.args(&self.tool[1..])
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .args(args)
            .env("GAUNTLET_ROUTER_PORT", self.port.to_string());
        c
    }

    fn ok(&self, args: &[&str], bound: Duration) -> Output {
        let o = run(&mut self.cmd(args), bound);
        assert!(
            o.status.success(),
            "{}",
            show(&format!("compose {}", args.join(" ")), &o)
        );
        o
    }
}

/// `docker ps -a` lines (name and status) of a project's containers.
fn containers(project: &str) -> Vec<String> {
    let o = run(
        Command::new("docker").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
            "--format",
            "{{.Names}} {{.Status}}",
        ]),
        Duration::from_secs(30),
    );
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = run(
            &mut self.cmd(&["down", "-v", "--remove-orphans", "--timeout", "5"]),
            Duration::from_secs(120),
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET on loopback without a client library: the status line.
fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply.lines().next().unwrap_or_default().to_owned())
}

fn env_value(env: &str, name: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in .env:\n{env}"))
        .to_owned()
}

#[test]
fn compose_file_comes_up_healthy_in_order_and_keeps_keys_in_env() {
    if !crate::docker::engine() {
        return;
    }
    let Some(tool) = compose_tool() else {
        let required = std::env::var("GAUNTLET_REQUIRE").is_ok_and(|v| v.split(',').any(|w| w == "all"));
        assert!(
            !required,
            "GAUNTLET_REQUIRE=all: neither `docker compose` nor `docker-compose` here"
        );
        eprintln!("neither `docker compose` nor `docker-compose` here: the compose test did not run");
        return;
    };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("compose-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("gauntlet.toml"), MANIFEST).unwrap();
    std::fs::write(root.join("router.yaml"), ROUTER).unwrap();
    let out = root.join("out");

    let o = run(
        Command::new(BIN)
            .args(["compose", "--out"])
            .arg(&out)
            .current_dir(&root)
            .env("GAUNTLET_MANIFEST", root.join("gauntlet.toml"))
            .env_remove("GAUNTLET_ROUTER_CONFIG")
            .env("GAUNTLET_BIN", BIN)
            .env("HEALTH_TIMEOUT", "30"),
        COMPOSE_TIMEOUT,
    );
    assert!(o.status.success(), "{}", show("gauntlet compose", &o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("up -d"),
        "{}",
        show("gauntlet compose", &o)
    );

    let env = std::fs::read_to_string(out.join(".env")).unwrap();
    let master = env_value(&env, "GAUNTLET_MASTER_KEY");
    let provider = env_value(&env, "GAUNTLET_PROVIDER_KEY");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join(".env")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let compose = std::fs::read_to_string(out.join("compose.yml")).unwrap();
    let router_cfg = std::fs::read_to_string(out.join("files/router.yaml")).unwrap();
    for (file, text) in [("compose.yml", &compose), ("router.yaml", &router_cfg)] {
        assert!(
            !text.contains(&master) && !text.contains(&provider),
            "a key in {file}:\n{text}"
        );
    }
    assert!(router_cfg.contains("os.environ/GAUNTLET_MASTER_KEY"), "{router_cfg}");
    assert!(out.join("files/sim.sim.json").is_file());

    let project = Project {
        tool,
        name: format!("gauntlet-compose-test-{}", std::process::id()),
        file: out.join("compose.yml"),
        port: free_port(),
    };
    project.ok(&["config", "-q"], Duration::from_secs(60));
    project.ok(&["up", "-d"], Duration::from_secs(120));

    let start = Instant::now();
    loop {
        let ps = containers(&project.name);
        if ps.len() == 2 && ps.iter().all(|l| l.contains("(healthy)")) {
            break;
        }
        assert!(
            start.elapsed() < HEALTHY_WITHIN && !ps.iter().any(|l| l.contains("unhealthy") || l.contains("Exited")),
            "not healthy after {:.0}s: {ps:?}\n{}",
            start.elapsed().as_secs_f64(),
            show(
                "logs",
                &run(&mut project.cmd(&["logs", "--no-color"]), Duration::from_secs(30))
            )
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = get(project.port, "/health").unwrap();
    assert!(status.contains(" 200"), "GET /health on the published port: {status}");

    // Inside the router's container: the other service by name, the keys from .env, and a
    // literal `$` as written.
    let router = containers(&project.name)
        .into_iter()
        .find(|l| l.contains("router"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap();
    let o = run(
        Command::new("docker").args(["exec", &router, "/gauntlet", "probe", "http://sim:8000/health"]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", show("probe sim from the router", &o));
    let o = run(
        Command::new("docker").args(["inspect", "--format", "{{json .Config.Env}}", &router]),
        Duration::from_secs(30),
    );
    let container_env = String::from_utf8_lossy(&o.stdout);
    for want in [
        format!("GAUNTLET_MASTER_KEY={master}"),
        format!("GAUNTLET_PROVIDER_KEY={provider}"),
        "UPSTREAM=http://sim:8000/d/default/v1".into(),
        "ROUTER_CONFIG=/run/gauntlet/router.yaml".into(),
        "PRICE=$5".into(),
    ] {
        assert!(container_env.contains(&want), "{want} not in {container_env}");
    }

    let name = project.name.clone();
    drop(project);
    assert_eq!(containers(&name), Vec::<String>::new(), "left behind by down -v");
    let _ = std::fs::remove_dir_all(&root);
}
