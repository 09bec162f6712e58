//! The `passerelle` command line: `run`, `check`, `connector`, `health`, `reload`, `version`, and
//! the connectors' older command names (aliases of `connector ACCOUNT COMMAND`).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "passerelle",
    about = "A cross-network messaging bridge daemon",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// The configuration file.
        #[arg(short, long, env = "PASSERELLE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
    },
    /// Check a configuration: report every problem, each with its key path, and exit non-zero
    /// when there is any. Makes no network connection.
    Check {
        /// The configuration file.
        #[arg(short, long, env = "PASSERELLE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
    },
    /// Run a command of an account's connector (`passerelle connector ACCOUNT COMMAND`); each
    /// kind lists its own in `passerelle connector ACCOUNT help`.
    Connector {
        /// The account, as named in the configuration (`[accounts.NAME]`).
        account: String,
        /// The connector's command.
        command: String,
        /// The configuration file.
        #[arg(short, long, env = "PASSERELLE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
    },
    /// A connector's older top-level command (`passerelle ALIAS [-c FILE] [--account NAME]`),
    /// kept for scripts; `passerelle version` lists them.
    #[command(external_subcommand)]
    Alias(Vec<String>),
    /// Ask the running daemon to read its configuration file again (as SIGHUP does), through
    /// its admin listener; print what changed, or every problem of a configuration it refused
    /// (then exit 2: the running configuration stays).
    Reload {
        /// The configuration file, read for `http.listen`.
        #[arg(short, long, env = "PASSERELLE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
        /// The admin listener's address, instead of the configured one.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
    /// Print the version and the connectors this build has.
    Version,
    /// Print the documented example configuration for this build (every key of every connector
    /// it has, explained): `config.example.toml` is this output.
    ExampleConfig,
    /// Convert another bridge's configuration: `passerelle import matterbridge
    /// matterbridge.toml > config.toml`. What could not be carried over is listed on stderr.
    Import {
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Copy a SQLite store into a new PostgreSQL one (`store.url`): the message map, the outbox
    /// (sealed, with its ids), connector state, links, pastes and dead letters, in one
    /// transaction, every table's row count checked before it commits. Stop the daemon first.
    MigrateStore {
        /// The SQLite store: `sqlite:PATH` (the `store.path` the daemon used).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`. It must hold
        /// no passerelle rows yet. Prefer `--to-file`: a command line is visible to other users.
        #[arg(long, required_unless_present = "to_file", conflicts_with = "to_file")]
        to: Option<String>,
        /// A file holding the `--to` URL (as `store.url_file`).
        #[arg(long)]
        to_file: Option<PathBuf>,
        /// With `sslmode=require` in the URL: CA certificates (PEM) trusted for the database's
        /// certificate besides the Mozilla roots (as `store.tls_ca_file`).
        #[arg(long)]
        to_tls_ca_file: Option<PathBuf>,
    },
    /// Ask a running daemon's `/healthz` (for container health checks); exit 0 when healthy.
    /// Asks the admin listener the configuration names (`http.listen`, after the environment's
    /// overrides), unless `--addr` says another address.
    Health {
        /// The configuration file, read for `http.listen`.
        #[arg(short, long, env = "PASSERELLE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
        /// The admin listener's address, instead of the configured one.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
    },
}

#[derive(Subcommand)]
enum ImportFrom {
    /// matterbridge's TOML file: its accounts become accounts, its gateways links.
    Matterbridge {
        /// matterbridge's configuration file.
        file: PathBuf,
        /// Write secrets (tokens, passwords) inline instead of to files named by `*_file` keys.
        #[arg(long)]
        inline_secrets: bool,
        /// Where the secret files go (created, readable by you only).
        #[arg(long, default_value = "secrets")]
        secrets_dir: PathBuf,
    },
}

fn import(from: ImportFrom) -> ExitCode {
    let ImportFrom::Matterbridge {
        file,
        inline_secrets,
        secrets_dir,
    } = from;
    let source = match std::fs::metadata(&file).and_then(|m| {
        if m.len() > passerelle::import::MAX_SOURCE as u64 {
            Err(std::io::Error::other(
                "over 4 MiB: is it a matterbridge configuration?",
            ))
        } else {
            std::fs::read_to_string(&file)
        }
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let secrets_dir = match std::path::absolute(&secrets_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --secrets-dir {}: {e}", secrets_dir.display());
            return ExitCode::from(2);
        }
    };
    let opts = passerelle::import::Options {
        inline_secrets,
        secrets_dir: secrets_dir.clone(),
    };
    let converted = match passerelle::import::matterbridge(&source, &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = passerelle::import::write_secrets(&converted.secret_files, &secrets_dir) {
        eprintln!(
            "error: writing secrets under {}: {e}",
            secrets_dir.display()
        );
        return ExitCode::from(2);
    }
    for note in &converted.notes {
        eprintln!("note: {note}");
    }
    print!("{}", converted.config);
    ExitCode::SUCCESS
}

/// Where the running daemon's admin listener is reached: `http.listen` of the configuration at
/// `path` (with the environment's overrides), an unspecified address (`0.0.0.0`, `[::]`) asked
/// on loopback.
fn admin_addr(path: &std::path::Path) -> Result<std::net::SocketAddr, String> {
    // Leniently: a file with problems elsewhere still names the listener (`reload` is how a
    // running daemon is told about a file, broken or not).
    if !path.exists() {
        return Err(format!("config file {} not found", path.display()));
    }
    let (config, _) = passerelle::config::load_lenient(path);
    let Some(mut addr) = config.http.listen_addr() else {
        return Err(format!(
            "{}: http.listen is empty: there is no admin listener to ask (send the daemon SIGHUP instead)",
            path.display()
        ));
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

/// One plain HTTP/1.0 request to the admin listener (so the container needs no HTTP client):
/// the status code and the body.
fn admin_request(
    addr: std::net::SocketAddr,
    request: &str,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    // At most 1 MiB of answer.
    s.take(1 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// `addr` when given, else the configured admin listener; `None` (and why, on stderr) when the
/// configuration does not name one.
fn asked_addr(
    config: &std::path::Path,
    addr: Option<std::net::SocketAddr>,
) -> Option<std::net::SocketAddr> {
    match addr.map(Ok).unwrap_or_else(|| admin_addr(config)) {
        Ok(a) => Some(a),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// `passerelle reload`: `POST /reload` on the admin listener.
fn reload(config: &std::path::Path, addr: Option<std::net::SocketAddr>) -> ExitCode {
    let Some(addr) = asked_addr(config, addr) else {
        return ExitCode::FAILURE;
    };
    // A reload waits for removed accounts to deliver what is queued (the grace period).
    let request = "POST /reload HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    match admin_request(addr, request, std::time::Duration::from_secs(120)) {
        Ok((200, body)) => {
            println!("{}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((422, body)) => {
            let issues = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["refused"].as_array().cloned())
                .unwrap_or_default();
            eprintln!(
                "{}: refused, the running configuration stays; {} problem(s):",
                config.display(),
                issues.len()
            );
            for i in issues {
                let path = i["path"].as_str().unwrap_or_default();
                let message = i["message"].as_str().unwrap_or_default();
                if path.is_empty() {
                    eprintln!("  {message}");
                } else {
                    eprintln!("  {path}: {message}");
                }
            }
            ExitCode::from(2)
        }
        Ok((code, _)) => {
            eprintln!("{addr}: /reload answered {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A plain HTTP/1.0 GET of `/healthz`, so the container needs no HTTP client.
fn health(config: &std::path::Path, addr: Option<std::net::SocketAddr>) -> ExitCode {
    let Some(addr) = asked_addr(config, addr) else {
        return ExitCode::FAILURE;
    };
    let request = "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n";
    match admin_request(addr, request, std::time::Duration::from_secs(3)) {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("{addr}: /healthz did not answer 200");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The crates whose log lines passerelle writes itself, and vouches for: they never log message
/// text. Other crates (HTTP, TLS, WebSocket libraries) may log payloads at their most verbose
/// levels, so a bare level in `PASSERELLE_LOG` applies to these crates only, and the others stay
/// at `info` at most.
const OWN_CRATES: [&str; 5] = [
    "passerelle",
    "passerelle_sdk",
    "passerelle_irc",
    "passerelle_api",
    "passerelle_matrix",
];

/// The log filter for a `PASSERELLE_LOG` value: a bare level (`trace`, `debug`...) applies to
/// passerelle's own crates; anything else is a full `tracing` filter, taken as written.
fn log_filter(value: Option<&str>) -> String {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("info");
    let bare = ["error", "warn", "info", "debug", "trace", "off"]
        .contains(&value.to_ascii_lowercase().as_str());
    if !bare {
        return value.to_owned();
    }
    let deps = match value.to_ascii_lowercase().as_str() {
        "error" => "error",
        "warn" => "warn",
        "off" => "off",
        _ => "info",
    };
    let mut filter = deps.to_owned();
    for krate in OWN_CRATES {
        filter.push_str(&format!(",{krate}={value}"));
    }
    filter
}

fn init_logging() {
    let value = std::env::var("PASSERELLE_LOG").ok();
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(value.as_deref()))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
}

fn report(path: &std::path::Path, issues: &[passerelle_sdk::ConfigIssue]) {
    eprintln!("{}: {} problem(s):", path.display(), issues.len());
    for issue in issues {
        if issue.path.is_empty() {
            eprintln!("  {}", issue.message);
        } else {
            eprintln!("  {issue}");
        }
    }
}

/// `passerelle connector ACCOUNT COMMAND`: runs the command of the account's connector kind.
fn connector_command(path: &std::path::Path, account: &str, command: &str) -> ExitCode {
    let config = match passerelle::config::load(path) {
        Ok(c) => c,
        Err(issues) => {
            report(path, &issues);
            return ExitCode::from(2);
        }
    };
    let Some((id, acc)) = config
        .accounts
        .iter()
        .find(|(id, _)| id.as_str() == account)
    else {
        eprintln!("{}: no account named {account:?}", path.display());
        return ExitCode::from(2);
    };
    let key = passerelle_sdk::config::path_key(id.as_str());
    let Some(factory) = passerelle::registry::factory(&acc.kind) else {
        eprintln!(
            "{}: accounts.{key}.kind: {:?} is not a connector of this build",
            path.display(),
            acc.kind
        );
        return ExitCode::from(2);
    };
    let commands = factory.commands();
    if command == "help" || !commands.iter().any(|c| c.name == command) {
        let mut text = if command == "help" {
            String::new()
        } else {
            format!(
                "accounts.{key}: kind {:?} has no command {command:?}\n",
                acc.kind
            )
        };
        if commands.is_empty() {
            text.push_str(&format!("kind {:?} has no commands\n", acc.kind));
        }
        for c in commands {
            text.push_str(&format!("  {}  {}\n", c.name, c.help));
        }
        if command == "help" {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        eprint!("{}: {text}", path.display());
        return ExitCode::from(2);
    }
    match run_command(&config, id, acc, factory.as_ref(), command) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(issues) => {
            report(path, &issues);
            ExitCode::from(2)
        }
    }
}

/// Runs `command` for one account; problems come with their full key paths.
fn run_command(
    config: &passerelle::config::Config,
    id: &passerelle_sdk::AccountId,
    acc: &passerelle::config::AccountConfig,
    factory: &dyn passerelle_sdk::ConnectorFactory,
    command: &str,
) -> Result<String, Vec<passerelle_sdk::ConfigIssue>> {
    // Networks call the listener that serves their callbacks.
    let ctx = passerelle_sdk::CommandContext {
        account: id.clone(),
        callbacks_url: config
            .http
            .callbacks_addr()
            .map(|addr| format!("http://{addr}/accounts/{id}")),
    };
    factory
        .run_command(&ctx, command, acc.table.clone())
        .map_err(|issues| {
            let key = passerelle_sdk::config::path_key(id.as_str());
            issues
                .into_iter()
                .map(|mut i| {
                    i.path = if i.path.is_empty() {
                        format!("accounts.{key}")
                    } else {
                        format!("accounts.{key}.{}", i.path)
                    };
                    i
                })
                .collect()
        })
}

/// `passerelle ALIAS [-c FILE] [--account NAME]`: a connector command's older name, run on the one
/// account of its kind it applies to (or the one named).
fn alias(args: &[String]) -> ExitCode {
    let Some((name, rest)) = args.split_first() else {
        return ExitCode::from(2);
    };
    let found = passerelle::registry::factories().into_iter().find_map(|f| {
        let command = f
            .commands()
            .iter()
            .find(|c| c.alias == Some(name.as_str()))?;
        Some((command.name, f))
    });
    let Some((command, factory)) = found else {
        eprintln!("error: unrecognized subcommand '{name}' (see passerelle --help)");
        return ExitCode::from(2);
    };
    let mut path = std::env::var_os("PASSERELLE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config.toml"));
    let mut account = None;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let value = match inline {
            Some(v) => Some(v),
            None => it.next().cloned(),
        };
        match (flag, value) {
            ("-c" | "--config", Some(v)) => path = PathBuf::from(v),
            ("--account", Some(v)) => account = Some(v),
            _ => {
                eprintln!(
                    "error: passerelle {name}: unexpected argument {arg:?} (it takes -c FILE and --account NAME)"
                );
                return ExitCode::from(2);
            }
        }
    }
    let config = match passerelle::config::load(&path) {
        Ok(c) => c,
        Err(issues) => {
            report(&path, &issues);
            return ExitCode::from(2);
        }
    };
    let kind = factory.kind();
    let candidates: Vec<_> = config
        .accounts
        .iter()
        .filter(|(id, a)| a.kind == kind && account.as_deref().is_none_or(|w| id.as_str() == w))
        .collect();
    let mut answers: Vec<_> = candidates
        .iter()
        .map(|(id, a)| run_command(&config, id, a, factory.as_ref(), command))
        .collect();
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    match (candidates.len(), ok) {
        (0, _) => {
            eprintln!(
                "{}: no {kind} account{}",
                path.display(),
                account.map(|a| format!(" named {a}")).unwrap_or_default()
            );
            ExitCode::from(2)
        }
        (_, 1) => {
            let text = answers.into_iter().find_map(Result::ok).unwrap_or_default();
            print!("{text}");
            ExitCode::SUCCESS
        }
        (1, 0) => {
            let issues = answers.pop().and_then(Result::err).unwrap_or_default();
            report(&path, &issues);
            ExitCode::from(2)
        }
        (_, 0) => {
            eprintln!(
                "{}: `{command}` applies to none of the {kind} accounts",
                path.display()
            );
            ExitCode::from(2)
        }
        _ => {
            eprintln!(
                "{}: `{command}` applies to several {kind} accounts: name one with --account",
                path.display()
            );
            ExitCode::from(2)
        }
    }
}

/// The multi-threaded runtime the daemon and the store commands run on; `None` (said on
/// stderr) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

fn migrate_store(
    from: &str,
    to: Option<String>,
    to_file: Option<PathBuf>,
    to_tls_ca_file: Option<PathBuf>,
) -> ExitCode {
    let Some(source) = from.strip_prefix("sqlite:") else {
        eprintln!("error: --from: write sqlite:PATH (the store.path of the installation)");
        return ExitCode::from(2);
    };
    let store = passerelle::config::StoreConfig {
        url: to.map(passerelle_sdk::Secret::new),
        url_file: to_file,
        tls_ca_file: to_tls_ca_file,
        ..Default::default()
    };
    let url = match store.database_url() {
        Ok(Some(url)) => url,
        Ok(None) => {
            eprintln!("error: --to: a PostgreSQL URL is needed");
            return ExitCode::from(2);
        }
        Err(issue) => {
            let text = issue
                .to_string()
                .replace("store.url_file", "--to-file")
                .replace("store.tls_ca_file", "--to-tls-ca-file")
                .replace("store.url", "--to");
            eprintln!("error: {text}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let destination = match passerelle::store::postgres::PostgresStore::connect_with(
            url.expose(),
            2,
            store.tls_ca_file.as_deref(),
        )
        .await
        {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: --to: {e}");
                return ExitCode::FAILURE;
            }
        };
        match passerelle::store::migrate::sqlite_to_postgres(std::path::Path::new(source), &destination)
            .await
        {
            Ok(copied) => {
                println!("copied {source} into {}:", destination.name());
                for (table, rows) in &copied.tables {
                    println!("  {table:<16} {rows:>10} rows (counted at both ends)");
                }
                println!(
                    "the outbox goes on from id {}. Set store.url (or store.url_file) and start the daemon; \
                     keep {source} until the bridge runs well, then remove it.",
                    copied.next_outbox_id
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Health { config, addr } => health(&config, addr),
        Command::Reload { config, addr } => reload(&config, addr),
        Command::Import { from } => import(from),
        Command::MigrateStore {
            from,
            to,
            to_file,
            to_tls_ca_file,
        } => migrate_store(&from, to, to_file, to_tls_ca_file),
        Command::ExampleConfig => {
            print!("{}", passerelle::registry::example_config());
            ExitCode::SUCCESS
        }
        Command::Version => {
            let kinds: Vec<&str> = passerelle::registry::factories()
                .iter()
                .map(|f| f.kind())
                .collect();
            println!(
                "passerelle {} (connectors: {})",
                env!("CARGO_PKG_VERSION"),
                kinds.join(", ")
            );
            for f in passerelle::registry::factories() {
                for c in f.commands() {
                    let alias = c
                        .alias
                        .map(|a| format!(" (also: passerelle {a})"))
                        .unwrap_or_default();
                    println!(
                        "  {} accounts: passerelle connector ACCOUNT {}{alias}",
                        f.kind(),
                        c.name
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Command::Connector {
            account,
            command,
            config,
        } => connector_command(&config, &account, &command),
        Command::Alias(args) => alias(&args),
        Command::Check { config } => match passerelle::daemon::load(&config) {
            Ok((c, _)) => {
                println!(
                    "{}: ok ({} accounts, {} links)",
                    config.display(),
                    c.accounts.len(),
                    c.links.len()
                );
                ExitCode::SUCCESS
            }
            Err(issues) => {
                report(&config, &issues);
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            init_logging();
            let (loaded, built) = match passerelle::daemon::load(&config) {
                Ok(x) => x,
                Err(issues) => {
                    report(&config, &issues);
                    return ExitCode::from(2);
                }
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(reload_on_hangup(reload_tx.clone()));
                let reloads = (reload_tx, reload_rx);
                match passerelle::daemon::run(config, loaded, built, shutdown, reloads).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT. The handlers are installed before this returns (so
/// before anything listens): a signal that comes the moment the daemon answers `/healthz` stops
/// it cleanly instead of killing it with the default action.
fn wait_for_signal(shutdown: CancellationToken) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        match handlers {
            (Some(mut term), Some(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = interrupt.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        shutdown.cancel();
    }
}

/// Asks the daemon to reload on every SIGHUP (the handler is installed before this returns, so
/// before anything listens: a SIGHUP never kills the daemon).
fn reload_on_hangup(
    reloads: tokio::sync::mpsc::Sender<passerelle::daemon::ReloadRequest>,
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handler = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut hangup) = handler {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the configuration");
                let request = passerelle::daemon::ReloadRequest { answer: None };
                if reloads.send(request).await.is_err() {
                    return;
                }
            }
        }
        #[cfg(not(unix))]
        drop(reloads);
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn a_bare_level_reaches_only_our_own_crates() {
        assert_eq!(
            log_filter(Some("trace")),
            "info,passerelle=trace,passerelle_sdk=trace,passerelle_irc=trace,passerelle_api=trace,\
             passerelle_matrix=trace"
        );
        assert!(log_filter(None).starts_with("info,passerelle=info"));
        assert_eq!(log_filter(Some("hyper=debug")), "hyper=debug");
        assert!(log_filter(Some("warn")).starts_with("warn,"));
    }
}
