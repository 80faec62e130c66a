//! `consumer-service verify`: every view, key by key, against the write database's history.
//!
//! The order views are compared at a [`Cut`]: the read snapshot's views must equal the write snapshot's
//! history without the orders in flight, exactly, however fast orders flow. The catalog replica follows
//! the product events, which the cut does not cover: a product the replica has at an older version (or
//! not yet) is read again until it settles, for up to `settle`.
//!
//! Both sides stream in key order and are merged, so memory holds one row of each, the differences kept
//! for the report (at most `max_differences`), and the products still settling.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use anyhow::bail;
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::{Map, Value as Json};
use sqlx::{AssertSqlSafe, PgPool};

use crate::{
    cut::{Cut, CutReport},
    rebuild,
    views::{VIEWS, Value, View},
};

#[derive(Debug, Clone)]
pub struct Settings {
    /// The consumers' hash retention (`PROCESSED_EVENTS_RETENTION`).
    pub retention: Duration,
    /// How long a product the replica lags on may take to settle.
    pub settle: Duration,
    /// How many differences the report lists; the rest are counted.
    pub max_differences: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `consistent` or `drift`.
    pub status: &'static str,
    pub cut: CutReport,
    pub views: Vec<ViewReport>,
    /// The first `max_differences` differences, in view and key order.
    pub differences: Vec<Difference>,
    pub differences_omitted: u64,
    pub seconds: f64,
}

impl Report {
    pub fn consistent(&self) -> bool {
        self.views.iter().all(|v| v.missing + v.unexpected + v.different == 0)
    }

    /// The report for people: a line per view, then the differences listed.
    pub fn summary(&self) -> String {
        let mut text =
            format!("{:<24} {:>10} {:>9} {:>11} {:>10}\n", "view", "keys", "missing", "unexpected", "different");
        for v in &self.views {
            text +=
                &format!("{:<24} {:>10} {:>9} {:>11} {:>10}\n", v.view, v.keys, v.missing, v.unexpected, v.different);
        }
        for d in &self.differences {
            let show = |figures: &Option<Map<String, Json>>| {
                figures.as_ref().map_or("none".to_owned(), |f| Json::Object(f.clone()).to_string())
            };
            text += &format!(
                "{} {:?} {}: expected {}, found {}\n",
                d.view,
                d.kind,
                Json::Object(d.key.clone()),
                show(&d.expected),
                show(&d.actual)
            );
        }
        if self.differences_omitted > 0 {
            text += &format!("… and {} more differences\n", self.differences_omitted);
        }
        text + &self.headline() + "\n"
    }

    /// The outcome in one line: the status, how many differences in which views, or how much was equal.
    pub fn headline(&self) -> String {
        let keys: u64 = self.views.iter().map(|v| v.keys).sum();
        if self.consistent() {
            return format!(
                "consistent: {} views, {keys} keys, {} orders in flight at the cut, {:.1} s",
                self.views.len(),
                self.cut.in_flight_orders,
                self.seconds
            );
        }
        let drifted: Vec<String> = self
            .views
            .iter()
            .filter(|v| v.missing + v.unexpected + v.different > 0)
            .map(|v| format!("{} {}", v.view, v.missing + v.unexpected + v.different))
            .collect();
        let total: u64 = self.views.iter().map(|v| v.missing + v.unexpected + v.different).sum();
        format!("drift: {total} keys differ ({}), {keys} keys compared, {:.1} s", drifted.join(", "), self.seconds)
    }
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewReport {
    pub view: &'static str,
    /// Keys on either side.
    pub keys: u64,
    /// Keys the history has and the view lacks.
    pub missing: u64,
    /// Keys the view has and the history lacks.
    pub unexpected: u64,
    /// Keys on both sides with different figures.
    pub different: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Missing,
    Unexpected,
    Different,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    pub view: &'static str,
    pub kind: Kind,
    pub key: Map<String, Json>,
    /// The figures the write side's history gives, if it has the key.
    pub expected: Option<Map<String, Json>>,
    /// The figures the view holds, if it has the key.
    pub actual: Option<Map<String, Json>>,
}

/// A view row: its key and its figures.
type Row = (Vec<Value>, Vec<Value>);

/// The most products kept settling; past that many, a lagging product counts as drift at once.
const MAX_SETTLING: usize = 10_000;

pub async fn verify(read: &PgPool, write: &PgPool, settings: &Settings) -> anyhow::Result<Report> {
    let started = Instant::now();
    let Some(_lock) = rebuild::verify_lock(read).await? else {
        bail!("a rebuild of this read database is running: verify after it ends");
    };
    let mut cut = Cut::take(read, write, settings.retention).await?;
    let cut_report = cut.report();
    tracing::info!(
        in_flight = cut.in_flight.len(),
        applied = cut.applied,
        horizon = %cut.horizon,
        "verify: cut taken"
    );
    let mut found = Found { differences: Vec::new(), omitted: 0, max: settings.max_differences };
    let mut views = Vec::new();
    let mut settling = BTreeSet::new();
    for view in VIEWS {
        let mut report = ViewReport { view: view.name, ..ViewReport::default() };
        let history = view.history(&cut.in_flight);
        let current = view.current(view.name);
        let mut expected = sqlx::query(AssertSqlSafe(history)).fetch(&mut *cut.write);
        let mut actual = sqlx::query(AssertSqlSafe(current)).fetch(&mut *cut.read);
        let decode = |row: Option<sqlx::postgres::PgRow>| row.map(|row| view.decode(&row)).transpose();
        let (mut next_expected, mut next_actual) =
            (decode(expected.try_next().await?)?, decode(actual.try_next().await?)?);
        let mut progress = Progress::new(view.name);
        loop {
            let kind = match (&next_expected, &next_actual) {
                (None, None) => break,
                (Some(e), Some(a)) if e.0 == a.0 => (e.1 != a.1).then_some(Kind::Different),
                (Some(e), Some(a)) if e.0 < a.0 => Some(Kind::Missing),
                (Some(_), None) => Some(Kind::Missing),
                _ => Some(Kind::Unexpected),
            };
            report.keys += 1;
            progress.tick(report.keys);
            let (take_expected, take_actual) = match kind {
                Some(Kind::Missing) => (true, false),
                Some(Kind::Unexpected) => (false, true),
                _ => (true, true),
            };
            let e = if take_expected { next_expected.take() } else { None };
            let a = if take_actual { next_actual.take() } else { None };
            if let Some(kind) = kind {
                if view.replica && lags(kind, e.as_ref(), a.as_ref()) && settling.len() < MAX_SETTLING {
                    if let Some(Value::Int(id)) = e.as_ref().and_then(|(key, _)| key.first()) {
                        settling.insert(*id);
                    }
                } else {
                    report.count(kind);
                    found.push(view, kind, e.as_ref(), a.as_ref());
                }
            }
            if take_expected {
                next_expected = decode(expected.try_next().await?)?;
            }
            if take_actual {
                next_actual = decode(actual.try_next().await?)?;
            }
        }
        tracing::info!(view = view.name, keys = report.keys, "verify: view compared");
        views.push(report);
    }
    drop(cut);

    if !settling.is_empty() {
        let ids: Vec<i64> = settling.into_iter().collect();
        tracing::info!(products = ids.len(), "verify: waiting for lagging products to settle");
        let replica = VIEWS.iter().find(|v| v.replica).expect("the catalog replica is a view");
        let report = views.iter_mut().find(|v| v.view == replica.name).expect("the replica was compared");
        for (kind, e, a) in settle(read, write, replica, ids, settings.settle).await? {
            report.count(kind);
            found.push(replica, kind, e.as_ref(), a.as_ref());
        }
    }

    let mut report = Report {
        status: "consistent",
        cut: cut_report,
        views,
        differences: found.differences,
        differences_omitted: found.omitted,
        seconds: started.elapsed().as_secs_f64(),
    };
    if !report.consistent() {
        report.status = "drift";
    }
    Ok(report)
}

/// Whether a difference of the replica may be a product event still on its way: the replica lacks the
/// product, or has it at an older version.
fn lags(kind: Kind, expected: Option<&Row>, actual: Option<&Row>) -> bool {
    let version = |row: Option<&Row>| row.and_then(|(_, figures)| figures.last().cloned());
    match kind {
        Kind::Missing => true,
        Kind::Different => {
            matches!((version(expected), version(actual)), (Some(Value::Int(w)), Some(Value::Int(r))) if r < w)
        }
        Kind::Unexpected => false,
    }
}

/// Reads the lagging products `ids` of `replica` again from both sides, every 200 ms, until they match
/// or `patience` runs out, and returns the differences that remain.
async fn settle(
    read: &PgPool,
    write: &PgPool,
    replica: &View,
    mut ids: Vec<i64>,
    patience: Duration,
) -> anyhow::Result<Vec<(Kind, Option<Row>, Option<Row>)>> {
    let deadline = Instant::now() + patience;
    let key = replica.key[0].name;
    let sql = format!("select {} from {} where {key} = any($1) order by {key}", replica.column_list(), replica.name);
    loop {
        let rows = |pool: &PgPool| {
            let (sql, ids) = (sql.clone(), ids.clone());
            let pool = pool.clone();
            async move {
                let rows = sqlx::query(AssertSqlSafe(sql)).bind(ids).fetch_all(&pool).await?;
                rows.iter().map(|row| replica.decode(row)).collect::<sqlx::Result<BTreeMap<_, _>>>()
            }
        };
        let (expected, actual) = (rows(write).await?, rows(read).await?);
        let mut remaining = Vec::new();
        let mut differences = Vec::new();
        for id in &ids {
            let key = vec![Value::Int(*id)];
            let e = expected.get(&key).map(|figures| (key.clone(), figures.clone()));
            let a = actual.get(&key).map(|figures| (key.clone(), figures.clone()));
            let kind = match (&e, &a) {
                (Some(e), Some(a)) if e.1 == a.1 => continue,
                (Some(_), Some(_)) => Kind::Different,
                (Some(_), None) => Kind::Missing,
                (None, _) => Kind::Unexpected,
            };
            if lags(kind, e.as_ref(), a.as_ref()) && Instant::now() < deadline {
                remaining.push(*id);
            } else {
                differences.push((kind, e, a));
            }
        }
        if remaining.is_empty() {
            return Ok(differences);
        }
        ids = remaining;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl ViewReport {
    fn count(&mut self, kind: Kind) {
        match kind {
            Kind::Missing => self.missing += 1,
            Kind::Unexpected => self.unexpected += 1,
            Kind::Different => self.different += 1,
        }
    }
}

/// The differences kept for the report.
struct Found {
    differences: Vec<Difference>,
    omitted: u64,
    max: usize,
}

impl Found {
    fn push(&mut self, view: &'static View, kind: Kind, expected: Option<&Row>, actual: Option<&Row>) {
        if self.differences.len() >= self.max {
            self.omitted += 1;
            return;
        }
        let key = expected.or(actual).map(|(key, _)| View::object(view.key, key)).unwrap_or_default();
        let figures = |row: Option<&Row>| row.map(|(_, figures)| View::object(view.figures, figures));
        self.differences.push(Difference {
            view: view.name,
            kind,
            key,
            expected: figures(expected),
            actual: figures(actual),
        });
    }
}

/// Logs how far a long comparison has come, every five seconds.
struct Progress {
    view: &'static str,
    last: Instant,
}

impl Progress {
    fn new(view: &'static str) -> Self {
        Self { view, last: Instant::now() }
    }

    fn tick(&mut self, keys: u64) {
        if self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            tracing::info!(view = self.view, keys, "verify: comparing");
        }
    }
}
