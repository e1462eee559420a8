//! The reporter's loop: nothing while another replica leads; while this one leads, learn the
//! reports already there, wait for the caches, judge everything once (a full pass), then follow
//! the watches' changes, write the stale namespaces' reports every debounce interval, and pass
//! over everything again at the configured interval, after a watch re-listed, when changes
//! overflowed the queue or when the policy changed.

use std::{
    collections::BTreeSet,
    fmt::Debug,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{apps::v1::StatefulSet, core::v1::Service},
};
use kube::{Api, Client, Resource, api::ListParams};
use serde::de::DeserializeOwned;
use tokio::{
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

use super::{
    Reporter,
    document::{self, MAX_RESULTS_BYTES},
    findings::{Findings, Key, judge},
    writer::{self, Writer},
};
use crate::{
    cluster::{self, Change},
    lookup::{Fact, Lookup},
    policy::Policy,
    subject::{self, Object},
    time,
};

/// Objects read again live per debounce interval, at most, for the changes of others.
const REFETCH_PER_TICK: usize = 1000;

struct State {
    reporter: Reporter,
    findings: Findings,
    writer: Writer,
    /// Objects whose facts changed with another object's change, to judge again.
    refetch: BTreeSet<Key>,
    relisted: bool,
}

pub(super) async fn run(reporter: Reporter, mut leading: watch::Receiver<bool>) {
    let client = reporter.cluster.client();
    let writer = Writer::new(
        client,
        reporter.args.api,
        reporter.args.write_rate,
        reporter.metrics.clone(),
        reporter.cluster.health().outage("reports"),
    );
    let mut state = State {
        reporter,
        findings: Findings::default(),
        writer,
        refetch: BTreeSet::new(),
        relisted: false,
    };
    loop {
        if *leading.borrow_and_update() {
            state.reporter.listening.store(true, Ordering::Relaxed);
            state.lead(&mut leading).await;
            tracing::info!("no longer leading: in-cluster reports left to the new leader");
        }
        state.reporter.listening.store(false, Ordering::Relaxed);
        state.findings.clear();
        state.writer.forget();
        state.refetch.clear();
        state.drain();
        if leading.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves once this replica no longer leads (or leadership ends with the process).
async fn lost(leading: &mut watch::Receiver<bool>) {
    let _ = leading.wait_for(|leads| !*leads).await;
}

impl State {
    fn policy(&self) -> Arc<Policy> {
        match &self.reporter.policy {
            Some(slot) => slot.get(),
            None => Arc::new(Policy::builtin()),
        }
    }

    fn lookup(&self) -> &dyn Lookup {
        self.reporter.cluster.as_ref()
    }

    /// Drops queued changes: the full pass that follows covers them.
    fn drain(&mut self) {
        while self.reporter.changes.try_recv().is_ok() {}
        self.reporter.overflow.store(false, Ordering::Relaxed);
        self.relisted = false;
    }

    /// Leads until leadership is lost.
    async fn lead(&mut self, leading: &mut watch::Receiver<bool>) {
        let mut watch_lost = leading.clone();
        let mut retry = Duration::from_secs(1);
        let existing = loop {
            let learned = tokio::select! {
                learned = self.writer.learn(&self.reporter.namespaces) => learned,
                () = lost(&mut watch_lost) => return,
            };
            match learned {
                Ok(existing) => {
                    self.writer.outage().answered();
                    break existing;
                }
                Err(e) => {
                    writer::failed(
                        self.writer.outage(),
                        &e,
                        "cannot list the existing reports",
                        "",
                    );
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = lost(&mut watch_lost) => return,
                    }
                    retry = (retry * 2).min(Duration::from_secs(30));
                }
            }
        };
        let health = self.reporter.cluster.health();
        while !health.synced() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = lost(&mut watch_lost) => return,
            }
        }
        self.drain();
        let mut policy = self.policy();
        if !self.full_pass(leading).await {
            return;
        }
        for namespace in existing {
            self.findings.touch(&namespace);
        }
        let args = &self.reporter.args;
        let mut tick = tokio::time::interval(args.debounce);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pass = tokio::time::interval_at(Instant::now() + args.interval, args.interval);
        pass.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Leadership first, then the ticks, so that a steady stream of changes cannot hold
            // back the writes.
            tokio::select! {
                biased;
                () = lost(&mut watch_lost) => return,
                _ = tick.tick() => {
                    // What has queued up until now goes into this batch.
                    for _ in 0..super::QUEUE {
                        let Ok(change) = self.reporter.changes.try_recv() else { break };
                        self.on_change(change);
                    }
                    let now = self.policy();
                    let again = self.reporter.overflow.swap(false, Ordering::Relaxed)
                        || std::mem::take(&mut self.relisted)
                        || !Arc::ptr_eq(&now, &policy);
                    policy = now;
                    if again && !self.full_pass(leading).await {
                        return;
                    }
                    if !self.judge_again(leading).await || !self.flush(leading).await {
                        return;
                    }
                }
                _ = pass.tick() => {
                    if !self.full_pass(leading).await {
                        return;
                    }
                }
                change = self.reporter.changes.recv() => match change {
                    Some(change) => self.on_change(change),
                    None => return,
                },
            }
        }
    }

    fn on_change(&mut self, change: Change) {
        match change {
            Change::Applied(object) => {
                self.fan_out(&object);
                let judged = judge(&self.policy(), self.lookup(), object, time::today());
                self.findings.set(judged);
            }
            Change::Deleted(object) => {
                self.fan_out(&object);
                self.findings.remove(&Key::of(&object));
            }
            Change::Relisted => self.relisted = true,
        }
    }

    /// The objects whose facts `object` is: a StatefulSet's governing Service, a Service's
    /// StatefulSets. They are read again live and judged at the next tick.
    fn fan_out(&mut self, object: &Object) {
        let key = Key::of(object);
        match object {
            Object::StatefulSet(sts) => {
                if let Some(service) = subject::governing_service(sts) {
                    self.refetch.insert(Key {
                        namespace: key.namespace,
                        kind: "Service",
                        name: service.to_owned(),
                    });
                }
            }
            Object::Service(_) => {
                if let Fact::Found(naming) =
                    self.lookup().statefulsets_naming(&key.namespace, &key.name)
                {
                    for sts in naming {
                        let name = sts.name.to_string();
                        self.refetch.insert(Key {
                            namespace: key.namespace.clone(),
                            kind: "StatefulSet",
                            name,
                        });
                    }
                }
            }
        }
    }

    /// Judges again the objects another object's change concerns, read live (the caches need
    /// not keep whole objects). False when leadership was lost.
    async fn judge_again(&mut self, leading: &watch::Receiver<bool>) -> bool {
        let client = self.reporter.cluster.client();
        for _ in 0..REFETCH_PER_TICK {
            let Some(key) = self.refetch.pop_first() else {
                break;
            };
            if !*leading.borrow() {
                return false;
            }
            let read = match key.kind {
                "Service" => get::<Service>(&client, &key).await,
                _ => get::<StatefulSet>(&client, &key).await,
            };
            match read {
                Ok(Some(object)) => {
                    let judged = judge(&self.policy(), self.lookup(), object, time::today());
                    self.findings.set(judged);
                }
                Ok(None) => self.findings.remove(&key),
                Err(e) => writer::failed(
                    self.writer.outage(),
                    &e,
                    "cannot read an object to judge it again; the next full pass will",
                    &key.namespace,
                ),
            }
        }
        true
    }

    /// Judges every object (a paged LIST of each kind) and forgets what no longer exists.
    /// False when leadership was lost.
    async fn full_pass(&mut self, leading: &watch::Receiver<bool>) -> bool {
        let pass = self.findings.begin_pass();
        let started = Instant::now();
        let client = self.reporter.cluster.client();
        let scopes: Vec<Option<String>> = if self.reporter.namespaces.is_empty() {
            vec![None]
        } else {
            self.reporter.namespaces.iter().cloned().map(Some).collect()
        };
        let mut judged = 0usize;
        for scope in &scopes {
            for kind in ["Service", "StatefulSet"] {
                let listed = match kind {
                    "Service" => {
                        self.judge_all::<Service>(&client, scope.as_deref(), leading)
                            .await
                    }
                    _ => {
                        self.judge_all::<StatefulSet>(&client, scope.as_deref(), leading)
                            .await
                    }
                };
                match listed {
                    Ok(Some(count)) => judged += count,
                    Ok(None) => return false,
                    Err(e) => {
                        writer::failed(
                            self.writer.outage(),
                            &e,
                            "the full pass of the in-cluster reports failed; kept the findings so far",
                            scope.as_deref().unwrap_or_default(),
                        );
                        return true;
                    }
                }
            }
        }
        self.findings.end_pass(pass);
        let counts = self.findings.counts();
        let violations: usize = counts.values().sum();
        self.reporter
            .metrics
            .full_pass(counts, jiff::Timestamp::now().as_second());
        tracing::info!(objects = judged, violations, took = ?started.elapsed(), "in-cluster reports: full pass done");
        true
    }

    /// Judges every object of kind `K` in `scope` (all namespaces when `None`), page by page.
    /// `Ok(None)` when leadership was lost.
    async fn judge_all<K>(
        &mut self,
        client: &Client,
        scope: Option<&str>,
        leading: &watch::Receiver<bool>,
    ) -> Result<Option<usize>, kube::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Into<Object>
            + Clone
            + DeserializeOwned
            + Debug,
    {
        let api: Api<K> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut params = ListParams::default().limit(cluster::PAGE);
        let mut count = 0;
        loop {
            if !*leading.borrow() {
                return Ok(None);
            }
            let page = api.list(&params).await?;
            let policy = self.policy();
            let today = time::today();
            for object in page.items {
                count += 1;
                let judged = judge(&policy, self.lookup(), object.into(), today);
                self.findings.set(judged);
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => return Ok(Some(count)),
            }
        }
    }

    /// Writes the reports of the namespaces whose findings changed. False when leadership was
    /// lost (at once, even in the middle of a write).
    async fn flush(&mut self, leading: &watch::Receiver<bool>) -> bool {
        let mut watch_lost = leading.clone();
        let mut failed = Vec::new();
        for namespace in self.findings.take_dirty() {
            if !*leading.borrow() {
                return false;
            }
            let report = document::build(
                self.reporter.args.api,
                &namespace,
                self.findings.namespace(&namespace),
                MAX_RESULTS_BYTES,
            );
            let written = tokio::select! {
                biased;
                () = lost(&mut watch_lost) => return false,
                written = self.writer.put(&namespace, report) => written,
            };
            if !written {
                failed.push(namespace);
            }
        }
        for namespace in failed {
            self.findings.touch(&namespace);
        }
        true
    }
}

/// An object read live; `None` when it does not exist.
async fn get<K>(client: &Client, key: &Key) -> Result<Option<Object>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Into<Object>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
    Ok(api.get_opt(&key.name).await?.map(Into::into))
}
