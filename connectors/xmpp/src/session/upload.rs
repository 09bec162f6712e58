//! File uploads (XEP-0363): fetch the message's files, ask for a slot, put each file, then send the
//! links.

use super::*;

/// A file upload in progress: the send it is for, the files still to put, the links of those
/// already up.
pub(super) struct Job {
    pub(super) outbound: Outbound,
    pub(super) files: VecDeque<(String, Fetched)>,
    pub(super) links: Vec<String>,
}

/// What an upload task reports.
pub(super) enum Step {
    /// The message's files, fetched.
    Fetched(Result<Vec<(String, Fetched)>, SendError>),
    /// One file is up, at this link.
    Put(Result<String, SendError>),
}

impl Session<'_> {
    /// Fetches a message's files (in a task, so the connection goes on being read); the next
    /// steps come back through [`Session::on_step`].
    pub(super) fn start_upload(&mut self, out: Outbound, files: Vec<Attachment>, max: u64) {
        self.next_job += 1;
        let job = self.next_job;
        let private = self.settings.fetch_private;
        let steps = self.steps_tx.clone();
        tokio::spawn(async move {
            let mut fetched = Vec::new();
            for a in &files {
                match passerelle_sdk::fetch::fetch(a, max, private).await {
                    Ok(f) => fetched.push((a.name.as_str().to_owned(), f)),
                    Err(e) => {
                        let _ = steps.send((job, Step::Fetched(Err(e))));
                        return;
                    }
                }
            }
            let _ = steps.send((job, Step::Fetched(Ok(fetched))));
        });
        self.jobs.insert(
            job,
            Job {
                outbound: out,
                files: VecDeque::new(),
                links: Vec::new(),
            },
        );
    }

    /// The next step of an upload.
    pub(super) async fn on_step(&mut self, job: u64, step: Step) -> Result<(), ConnectorError> {
        if !self.jobs.contains_key(&job) {
            return Ok(()); // answered already (the connection dropped meanwhile)
        }
        match step {
            Step::Fetched(Ok(files)) => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.files = files.into();
                }
                self.request_slot(job).await
            }
            Step::Put(Ok(link)) => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.links.push(link);
                }
                self.request_slot(job).await
            }
            Step::Fetched(Err(e)) | Step::Put(Err(e)) => self.upload_failed(job, e).await,
        }
    }

    /// Asks the service for a slot for the job's next file, or sends the message once every file
    /// is up.
    pub(super) async fn request_slot(&mut self, job: u64) -> Result<(), ConnectorError> {
        let (Some(service), Some(j)) = (self.upload.clone(), self.jobs.get(&job)) else {
            return Ok(());
        };
        let Some((name, file)) = j.files.front() else {
            let links = j.links.clone();
            return self.finish_upload(job, links).await;
        };
        let request = crate::upload::slot_request(
            &format!("pss-slot-{job}"),
            &service.jid,
            name,
            file.data.len() as u64,
            &file.mime,
        );
        self.slot_iqs.insert(format!("pss-slot-{job}"), job);
        self.send(request).await
    }

    /// The service answered a slot request: the file goes up in a task.
    pub(super) fn on_slot(&mut self, job: u64, answer: Result<crate::upload::Slot, SendError>) {
        let steps = self.steps_tx.clone();
        let Some((_, file)) = self.jobs.get_mut(&job).and_then(|j| j.files.pop_front()) else {
            return;
        };
        let answer = answer.map(|slot| {
            tokio::spawn(async move {
                let step = match crate::upload::put(&slot, &file.mime, file.data).await {
                    Ok(()) => Step::Put(Ok(slot.get)),
                    Err(e) => Step::Put(Err(e)),
                };
                let _ = steps.send((job, step));
            })
        });
        if let Err(e) = answer {
            let _ = self.steps_tx.send((job, Step::Put(Err(e))));
        }
    }

    /// An upload that can't be made: a lost connection is answered so (the daemon retries);
    /// anything else sends the files' original links instead, so nothing is dropped.
    pub(super) async fn upload_failed(
        &mut self,
        job: u64,
        e: SendError,
    ) -> Result<(), ConnectorError> {
        if e == SendError::Disconnected {
            if let Some(j) = self.jobs.remove(&job) {
                j.outbound.respond(Err(e));
            }
            return Ok(());
        }
        tracing::warn!(
            reason = e.reason(),
            "a file could not be uploaded to XMPP; its link is sent instead"
        );
        let links = self
            .jobs
            .get(&job)
            .and_then(|j| j.outbound.event.content())
            .map(|c| {
                c.attachments
                    .iter()
                    .filter(|a| !a.url.is_empty())
                    .map(|a| a.url.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        self.finish_upload(job, links).await
    }

    /// Sends the job's message with `links` (the uploaded files', or the original ones).
    pub(super) async fn finish_upload(
        &mut self,
        job: u64,
        links: Vec<String>,
    ) -> Result<(), ConnectorError> {
        let Some(j) = self.jobs.remove(&job) else {
            return Ok(());
        };
        let out = j.outbound;
        let (to, type_) = match self.target(out.event.room.as_str()) {
            Ok(t) => t,
            Err(e) => {
                out.respond(Err(e));
                return Ok(());
            }
        };
        let Some(content) = out.event.content().cloned() else {
            return Ok(());
        };
        let direct = type_ == MessageType::Chat;
        let mut m = stanza::new_message(to, type_, &format!("pss-{}", out.event.key));
        stanza::set_text_and_links(
            &mut m,
            content.text.as_str(),
            content.kind == MessageKind::Emote,
            &links,
        );
        if let Some(target) = &out.event.reply_to {
            stanza::set_reply(&mut m, target.as_str(), None);
        }
        self.dispatch(out, m, direct).await
    }
}
