//! The `passerelle` command line: `run`, `check`, `matrix-registration`, `health`, `version`.

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
    /// Print the appservice registration YAML for a Matrix account in appservice mode, for the
    /// homeserver (Synapse: `app_service_config_files`).
    #[cfg(feature = "matrix")]
    MatrixRegistration {
        /// The configuration file.
        #[arg(short, long, env = "PASSERELLE_CONFIG", default_value = "config.toml")]
        config: PathBuf,
        /// The account, when more than one is in appservice mode.
        #[arg(long)]
        account: Option<String>,
    },
    /// Print the version and the connectors this build has.
    Version,
    /// Ask a running daemon's `/healthz` (for container health checks); exit 0 when healthy.
    Health {
        /// The admin listener's address.
        #[arg(long, default_value = "127.0.0.1:9180")]
        addr: std::net::SocketAddr,
    },
}

/// A plain HTTP/1.0 GET of `/healthz`, so the container needs no HTTP client.
fn health(addr: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(3);
    let answer = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(buf)
    });
    match answer {
        Ok(buf) if buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200") => {
            ExitCode::SUCCESS
        }
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

/// Prints the registration of the one (or the named) Matrix account in appservice mode.
#[cfg(feature = "matrix")]
fn matrix_registration(path: &std::path::Path, account: Option<String>) -> ExitCode {
    let config = match passerelle::config::load(path) {
        Ok(c) => c,
        Err(issues) => {
            report(path, &issues);
            return ExitCode::from(2);
        }
    };
    let candidates: Vec<_> = config
        .accounts
        .iter()
        .filter(|(id, a)| {
            a.kind == "matrix"
                && a.table["mode"] == "appservice"
                && account.as_deref().is_none_or(|want| id.as_str() == want)
        })
        .collect();
    let (id, acc) = match candidates.as_slice() {
        [one] => *one,
        [] => {
            eprintln!(
                "{}: no Matrix account in appservice mode{}",
                path.display(),
                account.map(|a| format!(" named {a}")).unwrap_or_default()
            );
            return ExitCode::from(2);
        }
        _ => {
            eprintln!(
                "{}: several appservice accounts: name one with --account",
                path.display()
            );
            return ExitCode::from(2);
        }
    };
    // The homeserver calls the listener that serves the networks' callbacks.
    let listen = config.http.callbacks_addr();
    let default_url = listen
        .map(|addr| format!("http://{addr}/accounts/{id}"))
        .unwrap_or_default();
    if listen.is_none() && acc.table.get("url").is_none() {
        eprintln!(
            "{}: neither http.public_listen nor http.listen is set, and accounts.{id}.url neither: the homeserver could not reach the daemon",
            path.display()
        );
        return ExitCode::from(2);
    }
    match passerelle_matrix::registration(acc.table.clone(), &default_url) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(issues) => {
            let issues: Vec<_> = issues
                .into_iter()
                .map(|mut i| {
                    i.path = format!(
                        "accounts.{}.{}",
                        passerelle_sdk::config::path_key(id.as_str()),
                        i.path
                    );
                    i
                })
                .collect();
            report(path, &issues);
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Health { addr } => health(addr),
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
            ExitCode::SUCCESS
        }
        #[cfg(feature = "matrix")]
        Command::MatrixRegistration { config, account } => matrix_registration(&config, account),
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
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(wait_for_signal(shutdown.clone()));
                match passerelle::daemon::run(loaded, built, shutdown).await {
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
