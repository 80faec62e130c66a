//! CPU time by process, from /proc: what each part of the pipeline costs during a phase, and how much
//! of the box the load generator itself takes.

use std::{collections::HashMap, fs};

/// /proc reports process times in clock ticks of USER_HZ, which Linux fixes at 100 on every
/// architecture it exposes to user space this way.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process whose whole tree is accounted for under one name. PostgreSQL's tree is split further by the
/// database each backend serves.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watched {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, pid) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=PID"))?;
        let pid = pid.trim().parse().map_err(|_| format!("{pid:?} is not a PID"))?;
        Ok(Self { name: name.to_owned(), pid })
    }
}

struct Stat {
    ppid: u32,
    /// utime + stime of the process itself.
    own: u64,
    /// cutime + cstime: its children that have exited and been waited for.
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; the fields after it are fixed.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat { ppid: u32::try_from(field(4)?).ok()?, own: field(14)? + field(15)?, reaped: field(16)? + field(17)? })
}

/// The database a PostgreSQL backend serves, from its title: `postgres: USER DATABASE HOST(PORT) STATE`.
fn backend_database(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    database_of_title(&String::from_utf8_lossy(&cmdline))
}

fn database_of_title(title: &str) -> Option<String> {
    let mut words = title.strip_prefix("postgres: ")?.split_whitespace();
    let _user = words.next()?;
    let database = words.next()?;
    // Auxiliary processes have titles such as "postgres: walwriter" or "postgres: autovacuum worker".
    words.next().filter(|host| host.contains('(')).map(|_| database.to_owned())
}

/// CPU seconds used so far, by account: one per watched process tree (PostgreSQL's as `postgres DB` per
/// database and `postgres` for everything else: background processes and exited backends), `loadgen`
/// for this process, and `machine` for every CPU of the box.
pub fn snapshot(watched: &[Watched]) -> HashMap<String, f64> {
    let mut stats = HashMap::new();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for pid in entries.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
            if let Some(stat) = stat(pid) {
                children.entry(stat.ppid).or_default().push(pid);
                stats.insert(pid, stat);
            }
        }
    }
    let mut accounts = HashMap::new();
    for watch in watched {
        let Some(root) = stats.get(&watch.pid) else { continue };
        *accounts.entry(watch.name.clone()).or_default() += root.own as f64 + root.reaped as f64;
        let mut stack = children.get(&watch.pid).cloned().unwrap_or_default();
        while let Some(pid) = stack.pop() {
            let Some(stat) = stats.get(&pid) else { continue };
            let account = match backend_database(pid) {
                Some(database) if watch.name == "postgres" => format!("postgres {database}"),
                _ => watch.name.clone(),
            };
            *accounts.entry(account).or_default() += stat.own as f64;
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    if let Some(me) = stats.get(&std::process::id()) {
        accounts.insert("loadgen".to_owned(), me.own as f64);
    }
    if let Some(busy) = machine_busy_ticks() {
        accounts.insert("machine".to_owned(), busy);
    }
    accounts.into_iter().map(|(name, ticks)| (name, ticks / TICKS_PER_SECOND)).collect()
}

/// Busy ticks of all CPUs together (everything but idle and iowait), from /proc/stat.
fn machine_busy_ticks() -> Option<f64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<f64> = text.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some(fields.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum())
}

/// CPU seconds each account used between two snapshots; accounts that lost time (a backend that exited
/// moves to `postgres`) count as 0.
pub fn used_between(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> HashMap<String, f64> {
    after.iter().map(|(name, end)| (name.clone(), (end - before.get(name).copied().unwrap_or(0.0)).max(0.0))).collect()
}

/// Those seconds as cores over `elapsed` seconds, largest first.
pub fn cores(used: &HashMap<String, f64>, elapsed: f64) -> Vec<(String, f64)> {
    let mut cores: Vec<(String, f64)> =
        used.iter().map(|(name, seconds)| (name.clone(), (seconds / elapsed * 100.0).round() / 100.0)).collect();
    cores.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    cores
}

/// Total CPU seconds of one process tree, exited children included.
pub fn tree_seconds(pid: u32) -> f64 {
    snapshot(&[Watched { name: "tree".to_owned(), pid }]).get("tree").copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_told_by_their_database_and_auxiliary_processes_by_nothing() {
        let backend = "postgres: postgres analytics_write 127.0.0.1(55028) idle";
        assert_eq!(database_of_title(backend).as_deref(), Some("analytics_write"));
        assert_eq!(database_of_title("postgres: autovacuum launcher"), None);
        assert_eq!(database_of_title("postgres: walwriter "), None);
        assert_eq!(database_of_title("/usr/lib/postgresql/15/bin/postgres -D data"), None);
    }

    #[test]
    fn time_used_is_never_negative_and_cores_come_largest_first() {
        let before = HashMap::from([("postgres analytics_write".to_owned(), 10.0), ("query".to_owned(), 5.0)]);
        let after = HashMap::from([
            ("postgres analytics_write".to_owned(), 4.0),
            ("query".to_owned(), 8.0),
            ("command".to_owned(), 1.0),
        ]);
        let used = used_between(&before, &after);
        assert_eq!(used["postgres analytics_write"], 0.0, "a backend that exited took its time along");
        assert_eq!(
            cores(&used, 2.0),
            [("query".to_owned(), 1.5), ("command".to_owned(), 0.5), ("postgres analytics_write".to_owned(), 0.0)]
        );
    }

    #[test]
    fn this_process_is_accounted_for() {
        let accounts = snapshot(&[]);
        assert!(accounts.contains_key("loadgen") && accounts["machine"] > 0.0, "{accounts:?}");
    }
}
