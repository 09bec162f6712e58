//! Live reload: the configuration read again and put in force without a restart, or refused whole.

use super::*;

/// A request to read the configuration file again and put it in force (SIGHUP, `POST /reload`,
/// `passerelle reload`). `answer`, when given, receives what changed or why it was refused.
pub struct ReloadRequest {
    /// Where the outcome goes.
    pub answer: Option<oneshot::Sender<ReloadOutcome>>,
}

/// What a reload did, or every problem of a configuration that was refused (the running one
/// stays in force).
pub type ReloadOutcome = Result<ReloadReport, Vec<passerelle_sdk::ConfigIssue>>;

/// What a reload changed. Ids and counts only.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Accounts started (new, or enabled again).
    pub started: Vec<String>,
    /// Accounts whose own table (or kind) changed: restarted alone.
    pub restarted: Vec<String>,
    /// Accounts whose rooms changed, handed the new rooms on their running connection.
    pub rooms_changed: Vec<String>,
    /// Accounts removed or disabled: stopped once their queue was delivered (or the grace was
    /// over).
    pub stopped: Vec<String>,
    /// Accounts that kept their connection as it was.
    pub unchanged: Vec<String>,
    /// Links in force now (configured and kept portals).
    pub links: usize,
    /// Sections changed in the file that take effect only at the next start.
    pub needs_restart: Vec<String>,
}

/// Sections a reload does not change: listeners, the store and its key, paste links, the cluster.
const RESTART_ONLY: [&str; 4] = ["store", "http", "pastes", "cluster"];

/// Reads the configuration at `path` again and puts it in force; see [`ReloadReport`]. A
/// configuration with any problem is refused whole. Order: the settings (rights, formats) and
/// the links first, so what a reload forbids stops at once; then new accounts start and changed
/// ones restart; last, removed accounts deliver what is queued for them (within
/// `general.shutdown_grace_secs`; their links stay in the route guard, not in the route table,
/// meanwhile) and stop.
pub(super) async fn reload(
    path: &std::path::Path,
    config: &mut Config,
    raw: &mut Option<serde_json::Value>,
    accounts: &mut Accounts,
    live: &Live,
    shutdown: &CancellationToken,
) -> ReloadOutcome {
    let (mut next, built) = load(path)?;
    let mut report = ReloadReport::default();
    let next_raw = crate::config::read_raw(path).ok();
    for section in RESTART_ONLY {
        let before = raw.as_ref().and_then(|r| r.get(section));
        let after = next_raw.as_ref().and_then(|r| r.get(section));
        if before != after {
            tracing::warn!(section, "changed, and takes effect only at the next start");
            report.needs_restart.push(section.to_owned());
        }
    }
    // Those sections stay as they started.
    next.store = config.store.clone();
    next.http = config.http.clone();
    next.pastes = config.pastes.clone();
    next.cluster = config.cluster.clone();

    let mut policies = policies_of(&next, &built);
    let pairs = registry::portal_pairs(&next, &built);
    // Which running accounts go, which restart, which start.
    let mut built: HashMap<AccountId, BuiltAccount> =
        built.into_iter().map(|b| (b.id.clone(), b)).collect();
    // Accounts removed or disabled go for good; those whose kind changed stop and start anew.
    let mut going: Vec<AccountId> = Vec::new();
    let mut rekind: Vec<AccountId> = Vec::new();
    for (id, running) in &accounts.running {
        match next.accounts.get(id) {
            Some(a) if a.enabled && a.kind == running.kind => {}
            Some(a) if a.enabled => rekind.push(id.clone()),
            _ => going.push(id.clone()),
        }
    }
    going.sort();

    // Settings and links first. The accounts that go keep, for the guard alone, their links and
    // their policy as it was, while they deliver what is queued for them; a removed one keeps
    // its policy in force too (the lanes look it up), a disabled one is disabled at once (so
    // nothing new is routed to it).
    let before = live.now();
    let mut draining_policies = Policies::default();
    for id in &going {
        if let Some(p) = before.policies.get(id) {
            draining_policies.insert(id.clone(), p.clone());
            policies.entry(id.clone()).or_insert_with(|| p.clone());
        }
    }
    live.replace(Settings {
        policies,
        general: next.general.clone(),
    });
    let draining: Vec<LinkConfig> = config
        .links
        .iter()
        .filter(|l| l.rooms.iter().any(|r| going.contains(&r.account)))
        .cloned()
        .collect();
    let links = match accounts
        .portals
        .reconfigure(next.links.clone(), pairs, draining, draining_policies)
        .await
    {
        Ok(links) => links,
        Err(e) => {
            return Err(vec![passerelle_sdk::ConfigIssue::new(
                "",
                format!("store: reading kept links: {e}"),
            )]);
        }
    };
    report.links = links.len();

    // Accounts that stay: a new table restarts the connector, new rooms go to it.
    let mut staying: Vec<AccountId> = accounts
        .running
        .keys()
        .filter(|id| !going.contains(id) && !rekind.contains(id))
        .cloned()
        .collect();
    staying.sort();
    for id in staying {
        let Some(running) = accounts.running.get(&id) else {
            continue;
        };
        let Some(b) = built.remove(&id) else {
            continue;
        };
        let relay = b.connector.relay(&id);
        let spec = AccountSpec {
            table: b.table,
            rooms: rooms_in(&links, &id),
        };
        let current = running.spec.borrow().clone();
        if current == spec {
            report.unchanged.push(id.to_string());
        } else if current.table != spec.table {
            report.restarted.push(id.to_string());
            // Cluster mode: calls are proved with the new table's secrets from now on.
            if let Some((relays, _)) = &accounts.relays {
                relays.set(&id, relay);
            }
        } else {
            report.rooms_changed.push(id.to_string());
        }
        running.spec.send_if_modified(|now| {
            if *now == spec {
                false
            } else {
                *now = spec;
                true
            }
        });
    }
    // Accounts whose kind changed stop before their new connector starts.
    let mut new_ids: Vec<AccountId> = next
        .accounts
        .iter()
        .filter(|(id, a)| a.enabled && (!accounts.running.contains_key(*id) || rekind.contains(id)))
        .map(|(id, _)| id.clone())
        .collect();
    new_ids.sort();
    for id in &new_ids {
        if rekind.contains(id) {
            accounts.stop(id).await;
            report.restarted.push(id.to_string());
        } else {
            report.started.push(id.to_string());
        }
        if let Some(b) = built.remove(id) {
            let kind = next
                .accounts
                .get(id)
                .map(|a| a.kind.clone())
                .unwrap_or_default();
            let rooms = rooms_in(&links, id);
            accounts.start(b, kind, rooms);
        }
    }

    *config = next;
    *raw = next_raw;
    accounts.show(&links);
    // Cluster mode: new accounts are taken, removed ones given back, from the next heartbeat.
    if let Some((_, cluster)) = &accounts.relays {
        cluster.set_accounts(
            config
                .accounts
                .iter()
                .filter(|(_, a)| a.enabled)
                .map(|(id, _)| id.clone()),
        );
    }

    // Last, the accounts that go: what is queued for them first, within the grace.
    if !going.is_empty() {
        let grace = Duration::from_secs(config.general.shutdown_grace_secs);
        let deadline = Instant::now() + grace;
        loop {
            let queued: u64 = match accounts.store.pending_by_account().await {
                Ok(rows) => rows
                    .iter()
                    .filter(|(a, _)| going.contains(a))
                    .map(|(_, n)| *n)
                    .sum(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox while draining removed accounts");
                    0
                }
            };
            if queued == 0 {
                break;
            }
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                tracing::warn!(
                    queued,
                    "removed accounts: grace period over; what is still queued for them is dropped when their lanes find them gone"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in &going {
            accounts.stop(id).await;
            report.stopped.push(id.to_string());
        }
        // Removed accounts leave the policies; disabled ones stay, disabled.
        let kept: Policies = live
            .now()
            .policies
            .iter()
            .filter(|(id, _)| !going.contains(id) || config.accounts.contains_key(*id))
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        live.replace(Settings {
            policies: kept,
            general: config.general.clone(),
        });
        accounts.portals.drained().await;
        accounts.show(&links);
    }
    Ok(report)
}
