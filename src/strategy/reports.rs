//! Server load reports, one table shared by every balancer.
//!
//! A server publishes its report once, into the table; every balancer reads the table
//! through its [`super::PickContext`]. Balancers refresh together in the simulator (all
//! at once, exactly after every change or at every `load_report_interval`), so "the
//! table as of my last refresh" is the same table for all of them, and a publication
//! costs O(1) whatever the number of balancers — where copying the report into every
//! balancer's view cost O(balancers).
//!
//! For the indexed variant of join-the-shortest-queue the table can also keep the servers
//! in buckets by reported queue length ([`LoadTable::with_queue_index`]).

use super::LoadReport;
use super::buckets::Buckets;

/// The latest report of each server.
#[derive(Clone, Debug, Default)]
pub struct LoadTable {
    reports: Vec<Option<LoadReport>>,
    /// Servers balancers see up, in buckets by reported `in_system` (0 before the first
    /// report), when asked for.
    by_queue: Option<Buckets>,
    up: Vec<bool>,
    /// Changes of any server's worker count as a strategy sees it (at least 1; 1 before
    /// its first report): see [`LoadTable::workers_epoch`].
    workers_epoch: u64,
}

impl LoadTable {
    /// A table of `n` servers, none reported yet.
    pub fn new(n: usize) -> LoadTable {
        LoadTable {
            reports: vec![None; n],
            by_queue: None,
            up: vec![true; n],
            workers_epoch: 0,
        }
    }

    /// A table that also keeps the servers that are up in buckets by reported queue
    /// length, for [`LoadTable::shortest`].
    pub fn with_queue_index(n: usize) -> LoadTable {
        let mut by_queue = Buckets::new(n);
        for i in 0..n {
            by_queue.set(i, true, 0);
        }
        LoadTable {
            by_queue: Some(by_queue),
            ..LoadTable::new(n)
        }
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.reports.len()
    }

    /// Whether the table has no server.
    pub fn is_empty(&self) -> bool {
        self.reports.is_empty()
    }

    /// The latest report of server `i`, if any.
    #[inline]
    pub fn get(&self, i: usize) -> Option<LoadReport> {
        self.reports.get(i).copied().flatten()
    }

    /// Server `i` reports. O(1).
    #[inline]
    pub fn publish(&mut self, i: usize, report: LoadReport) {
        if i >= self.reports.len() {
            self.reports.resize(i + 1, None);
            self.up.resize(i + 1, true);
        }
        let before = self.reports[i].map_or(1, |r| r.workers.max(1));
        if report.workers.max(1) != before {
            self.workers_epoch += 1;
        }
        self.reports[i] = Some(report);
        if let Some(b) = &mut self.by_queue
            && i < b.len()
        {
            b.set(i, self.up[i], report.in_system);
        }
    }

    /// How many times some server's worker count, at least 1 (1 before its first report),
    /// changed: a strategy that keeps an index of per-server slots ([`super::First`])
    /// rebuilds it when this moves, and otherwise reads no report. 0 while every server
    /// counts 1.
    #[inline]
    pub fn workers_epoch(&self) -> u64 {
        self.workers_epoch
    }

    /// Balancers' health checks now see server `i` up or down (for the queue index).
    pub fn set_up(&mut self, i: usize, up: bool) {
        if let Some(u) = self.up.get_mut(i) {
            *u = up;
        }
        let q = self.get(i).map_or(0, |r| r.in_system);
        if let Some(b) = &mut self.by_queue
            && i < b.len()
        {
            b.set(i, up, q);
        }
    }

    /// The up servers of the lowest reported queue length (`None` without a queue index,
    /// or when no server is up).
    pub fn shortest(&self) -> Option<&[u32]> {
        self.by_queue.as_ref()?.lowest()
    }

    /// Whether the table keeps a queue index.
    pub fn has_queue_index(&self) -> bool {
        self.by_queue.is_some()
    }
}
