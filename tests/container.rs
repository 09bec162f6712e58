//! The container image, run as a self-hoster runs it: one TOML file mounted read-only, a data
//! volume, a secret mounted as a file, an environment override. The image is the one
//! `scripts/container.sh up` built from the Dockerfile as written (the test command does that
//! first); its engine is named by `DOCKER_HOST`. Every container uses the host's network, and
//! listens on loopback only.

mod common;

use common::{Api, free_port};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn image() -> String {
    std::env::var("PASSERELLE_TEST_IMAGE").unwrap_or_else(|_| "passerelle:test".to_owned())
}

fn docker_bin() -> String {
    std::env::var("PASSERELLE_DOCKER").unwrap_or_else(|_| "/usr/bin/docker".to_owned())
}

fn docker(args: &[&str]) -> Output {
    Command::new(docker_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", docker_bin()))
}

/// `docker ARGS`, which must succeed; its standard output, trimmed.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "-f", format, container])
}

/// Containers and volumes made by one test, removed when it ends (passed or not).
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

/// Waits until Docker's health check calls the container `healthy`; panics with its state and
/// logs otherwise.
async fn wait_healthy(container: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = inspect(container, "{{.State.Status}} {{.State.Health.Status}}");
        if status == "running healthy" {
            return;
        }
        if Instant::now() > deadline || status.starts_with("exited") {
            let health = inspect(container, "{{json .State.Health}}");
            panic!(
                "{container} is `{status}`, not healthy, after {timeout:?}; health: {health}\nlogs:\n{}",
                logs(container)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn logs(container: &str) -> String {
    let out = docker(&["logs", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The user and group ids (real, effective, saved, filesystem) of the container's process, read
/// from the host's `/proc`.
fn process_ids(container: &str) -> (String, String) {
    let pid = inspect(container, "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"))
}

struct Setup {
    dir: tempfile::TempDir,
    volume: String,
    admin: u16,
    public: u16,
    a: (u16, String),
    b: (u16, String),
}

/// The config a self-hoster writes: two API accounts linked, the admin listener where it is by
/// default (127.0.0.1:9180; the second container moves it by the environment); api_a's token is
/// read from a file (mounted where a docker secret would be); api_b's token comes from the
/// environment.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = (free_port(), "container-token-aaaa-1f2e".to_owned());
    let b = (free_port(), "container-token-bbbb-9c8d".to_owned());
    let config = format!(
        r#"[general]
shutdown_grace_secs = 5

[accounts.api_a]
kind = "api"
listen = "127.0.0.1:{}"
token_file = "/run/secrets/api_a_token"
rights = ["read", "write", "delete"]

[accounts.api_b]
kind = "api"
listen = "127.0.0.1:{}"
token = "placeholder-overridden-by-env"
rights = ["read", "write", "delete"]

[[links]]
name = "lobby"
rooms = [
  {{ account = "api_a", room = "lobby" }},
  {{ account = "api_b", room = "lobby" }},
]
"#,
        a.0, b.0
    );
    write_readable(&dir.path().join("config.toml"), &config);
    write_readable(&dir.path().join("api_a_token"), &a.1);
    Setup {
        dir,
        volume: unique("passerelle-test-data"),
        admin: free_port(),
        public: free_port(),
        a,
        b,
    }
}

/// Writes a file the container's user (not the test's) can read, as a mounted secret is.
fn write_readable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    if let Some(parent) = path.parent() {
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
    }
}

/// The admin listener's address by default.
const DEFAULT_ADMIN: u16 = 9180;

/// `docker run -d --name NAME --network host --health-interval 1s`: the start of every run here
/// (only the health check's interval set; its command is the image's own).
fn run_args(name: &str) -> Vec<String> {
    [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--health-interval",
        "1s",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

/// Starts a container on `s`: config read-only, the secret read-only, the volume at /data; the
/// admin listener moved by the environment when `moved`.
fn run(s: &Setup, name: &str, moved: bool) {
    let mut args = run_args(name);
    let mounts = [
        format!(
            "{}:/config/config.toml:ro",
            s.dir.path().join("config.toml").display()
        ),
        format!(
            "{}:/run/secrets/api_a_token:ro",
            s.dir.path().join("api_a_token").display()
        ),
        format!("{}:/data", s.volume),
    ];
    for m in mounts {
        args.extend(["-v".to_owned(), m]);
    }
    let mut env = vec![
        format!("PASSERELLE__HTTP__PUBLIC_LISTEN=127.0.0.1:{}", s.public),
        format!("PASSERELLE__ACCOUNTS__API_B__TOKEN={}", s.b.1),
    ];
    if moved {
        env.push(format!("PASSERELLE__HTTP__LISTEN=127.0.0.1:{}", s.admin));
    }
    for e in env {
        args.extend(["-e".to_owned(), e]);
    }
    args.push(image());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker_ok(&args);
}

#[tokio::test]
async fn the_image_runs_as_a_self_hoster_runs_it_and_keeps_its_store_across_containers() {
    let s = setup();
    let first = unique("passerelle-test-1");
    let second = unique("passerelle-test-2");
    let _cleanup = Cleanup {
        containers: vec![first.clone(), second.clone()],
        volumes: vec![s.volume.clone()],
    };

    let size: u64 = docker_ok(&["image", "inspect", "-f", "{{.Size}}", &image()])
        .parse()
        .expect("image size");
    println!("image {}: {} MB ({size} bytes)", image(), size / 1_000_000);
    assert!(
        size < 70_000_000,
        "the image is {size} bytes, over the 70 MB goal"
    );
    // Distroless: no shell to start.
    let shell = docker(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "/bin/sh",
        &image(),
        "-c",
        "true",
    ]);
    assert!(!shell.status.success(), "the image has a shell");
    // The health check is the daemon's own command, which reads the configured address.
    let check = inspect(&image(), "{{json .Config.Healthcheck.Test}}");
    assert_eq!(check, r#"["CMD","passerelle","health"]"#);

    // The first container: the admin listener where it is by default.
    run(&s, &first, false);
    wait_healthy(&first, Duration::from_secs(60)).await;
    let (uid, gid) = process_ids(&first);
    assert_eq!(uid, "10001 10001 10001 10001", "the daemon's user ids");
    assert_eq!(gid, "10001 10001 10001 10001", "the daemon's group ids");
    let healthz = reqwest::get(format!("http://127.0.0.1:{DEFAULT_ADMIN}/healthz"))
        .await
        .expect("admin listener reachable on its default address");
    assert_eq!(healthz.status().as_u16(), 200);

    // A message posted to one account comes out of the other; the token from the file and the
    // one from the environment are the ones that work.
    let api_a = Api::new(s.a.0, &s.a.1);
    let api_b = Api::new(s.b.0, &s.b.1);
    let (refused, _) = Api::new(s.b.0, "placeholder-overridden-by-env")
        .post(serde_json::json!({"text": "x", "username": "u", "gateway": "lobby"}))
        .await;
    assert_eq!(refused, 401, "the token in the file was overridden");
    let mut stream_b = api_b.stream().await;
    let (status, posted) = api_a
        .post(serde_json::json!({"text": "before the restart", "username": "alice", "gateway": "lobby"}))
        .await;
    assert_eq!(status, 200, "{posted}");
    let got = stream_b
        .next(WAIT)
        .await
        .expect("the message reaches api_b");
    assert_eq!(got["text"], "before the restart");
    let id_on_b = got["id"].as_str().expect("id").to_owned();
    drop(stream_b);

    // docker stop: SIGTERM, a drain, exit 0, well within the grace docker gives.
    let started = Instant::now();
    docker_ok(&["stop", "-t", "30", &first]);
    let took = started.elapsed();
    let exit = inspect(&first, "{{.State.ExitCode}}");
    let log = logs(&first);
    assert_eq!(exit, "0", "exit code; logs:\n{log}");
    // Nothing is queued: well within the 5 s grace.
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped"),
        "{log}"
    );
    assert!(
        !log.contains("before the restart"),
        "message text in the logs"
    );
    println!("docker stop took {} ms", took.as_millis());

    // A second container on the same volume, its admin listener moved by the environment: the
    // health check follows it, and the message map is found (a reply on api_b to the message
    // bridged before comes out of api_a as a reply to the original).
    run(&s, &second, true);
    wait_healthy(&second, Duration::from_secs(60)).await;
    let healthz = reqwest::get(format!("http://127.0.0.1:{}/healthz", s.admin))
        .await
        .expect("admin listener reachable where the environment moved it");
    assert_eq!(healthz.status().as_u16(), 200);
    assert!(
        reqwest::get(format!("http://127.0.0.1:{DEFAULT_ADMIN}/healthz"))
            .await
            .is_err(),
        "the admin listener is still on its default address"
    );
    let mut stream_a = api_a.stream().await;
    let (status, answer) = api_b
        .post(serde_json::json!({"text": "after the restart", "username": "bob", "gateway": "lobby", "parent_id": id_on_b}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let reply = stream_a.next(WAIT).await.expect("the reply reaches api_a");
    assert_eq!(reply["text"], "after the restart");
    assert_eq!(
        reply["parent_id"], posted["id"],
        "the reply points at the message posted before the restart: {reply}"
    );
    docker_ok(&["stop", "-t", "30", &second]);
    assert_eq!(inspect(&second, "{{.State.ExitCode}}"), "0");
}

/// `deploy/compose.cluster.yaml`'s environment for `service`: its `KEY: value` lines.
fn compose_environment(service: &str) -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose.cluster.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/compose.cluster.yaml");
    let mut env = Vec::new();
    let (mut in_service, mut in_env) = (false, false);
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if indent == 2 && trimmed.ends_with(':') {
            in_service = trimmed == format!("{service}:");
            in_env = false;
        } else if in_service && indent == 4 {
            in_env = trimmed == "environment:";
        } else if in_service
            && in_env
            && indent == 6
            && let Some((k, v)) = trimmed.split_once(": ")
        {
            env.push((k.to_owned(), v.trim_matches('"').to_owned()));
        }
    }
    assert!(
        !env.is_empty(),
        "no environment for {service} in {}",
        path.display()
    );
    env
}

/// The two instances of `deploy/compose.cluster.yaml`, run from the image with that file's
/// environment and secrets mounted where compose mounts them, on a real PostgreSQL: each
/// joins the cluster under its name, the two API accounts run at one or the other and carry a
/// message between them, and once `docker stop` ends one instance (its leases given back) the
/// other runs both and carries the next.
#[tokio::test]
async fn the_compose_files_two_instances_share_the_accounts_through_postgresql() {
    let (url, _pg) = passerelle_testkit::postgres::Postgres::shared_database();
    let s = setup();
    write_readable(&s.dir.path().join("database_url"), &url);
    write_readable(&s.dir.path().join("outbox_key"), &"5a".repeat(32));
    let names = ["bridge-1", "bridge-2"];
    let containers: Vec<String> = names
        .iter()
        .map(|n| unique(&format!("passerelle-{n}")))
        .collect();
    let admins = [free_port(), free_port()];
    let volumes: Vec<String> = names
        .iter()
        .map(|n| unique(&format!("passerelle-{n}-data")))
        .collect();
    let _cleanup = Cleanup {
        containers: containers.clone(),
        volumes: volumes.clone(),
    };
    for (((service, container), admin), volume) in
        names.iter().zip(&containers).zip(admins).zip(&volumes)
    {
        let mut args = run_args(container);
        for (file, at) in [
            ("config.toml", "/config/config.toml"),
            ("api_a_token", "/run/secrets/api_a_token"),
            ("database_url", "/run/secrets/database_url"),
            ("outbox_key", "/run/secrets/outbox_key"),
        ] {
            args.extend([
                "-v".into(),
                format!("{}:{at}:ro", s.dir.path().join(file).display()),
            ]);
        }
        args.extend(["-v".into(), format!("{volume}:/data")]);
        let mut env: Vec<(String, String)> = compose_environment(service);
        // Host networking here: each instance's listeners on ports of its own.
        env.push((
            "PASSERELLE__HTTP__LISTEN".into(),
            format!("127.0.0.1:{admin}"),
        ));
        env.push((
            "PASSERELLE__HTTP__PUBLIC_LISTEN".into(),
            format!("127.0.0.1:{}", free_port()),
        ));
        env.push(("PASSERELLE__ACCOUNTS__API_B__TOKEN".into(), s.b.1.clone()));
        for (k, v) in env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        args.push(image());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
    }
    for c in &containers {
        wait_healthy(c, Duration::from_secs(60)).await;
    }
    // Who runs what, by each instance's /readyz, once both accounts run somewhere.
    let owners = async |live: &[usize]| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut connected = 0;
            let mut owners = serde_json::Value::Null;
            for &i in live {
                let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/readyz", admins[i])).await
                else {
                    continue;
                };
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                assert_eq!(body["cluster"]["instance"], names[i], "{body}");
                for a in ["api_a", "api_b"] {
                    connected += usize::from(body["accounts"][a] == "connected");
                }
                owners = body["cluster"]["owners"].clone();
            }
            // Settled: both run, each live instance runs its share (one each for two).
            let shares = live.iter().all(|i| {
                ["api_a", "api_b"]
                    .iter()
                    .filter(|a| owners[**a] == names[*i])
                    .count()
                    == 2 / live.len()
            });
            if connected == 2 && shares {
                return owners;
            }
            assert!(
                Instant::now() < deadline,
                "the accounts did not both run: {owners}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let carry = async |text: &str| {
        let api_a = Api::new(s.a.0, &s.a.1);
        let mut stream_b = Api::new(s.b.0, &s.b.1).stream().await;
        let (status, answer) = api_a
            .post(serde_json::json!({"text": text, "username": "alice", "gateway": "lobby"}))
            .await;
        assert_eq!(status, 200, "{answer}");
        let got = stream_b
            .next(WAIT)
            .await
            .expect("the message reaches api_b");
        assert_eq!(got["text"], text);
    };
    let before = owners(&[0, 1]).await;
    for a in ["api_a", "api_b"] {
        assert!(
            names.iter().any(|n| before[a] == *n),
            "{a} owned by {before}"
        );
    }
    carry("through the cluster").await;
    docker_ok(&["stop", "-t", "30", &containers[0]]);
    assert_eq!(inspect(&containers[0], "{{.State.ExitCode}}"), "0");
    assert!(logs(&containers[0]).contains("cluster: leases given back"));
    let after = owners(&[1]).await;
    assert_eq!(after["api_a"], "bridge-2", "{after}");
    assert_eq!(after["api_b"], "bridge-2", "{after}");
    carry("after bridge-1 stopped").await;
    println!("compose cluster: owners {before} then {after}");
    docker_ok(&["stop", "-t", "30", &containers[1]]);
}
