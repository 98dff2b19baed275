//! The Sleep decision: a pure function of what CloudWatch and ECS report,
//! so every case is a table row. Idle means no byte through any stream for
//! the whole window, whatever connections are open: an agent that stays
//! connected while nobody browses must not keep the server (and its public
//! IPv4 address) paid for. A task younger than the window that has not
//! reported yet is not idle.

use std::time::Duration;

/// What Sleep observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Desired count of the service.
    pub desired: i32,
    /// Unix seconds now.
    pub now: u64,
    /// When the running task started (Unix seconds), if there is one.
    pub task_started_at: Option<u64>,
    /// Maximum `ActiveConnections` over the window, if any datapoint.
    pub max_connections: Option<f64>,
    /// Maximum `LastActivityEpochSeconds` over the window, if any datapoint.
    pub last_activity: Option<f64>,
    /// The idle threshold.
    pub idle_threshold: Duration,
}

/// What Sleep does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Scale the service to 0.
    Sleep(String),
    /// Leave it running.
    Stay(String),
    /// Already at 0.
    AlreadyStopped,
}

/// Decides from `observation`. Idleness runs from the newest of the last
/// activity and the task's start: the metrics are one series per service,
/// so a task just woken would otherwise be judged by the datapoints of the
/// task before it and put straight back to sleep.
pub fn decide(observation: &Observation) -> Decision {
    let o = observation;
    let threshold = o.idle_threshold.as_secs();
    if o.desired == 0 {
        return Decision::AlreadyStopped;
    }
    let age = o.task_started_at.map(|started| o.now.saturating_sub(started));
    let quiet = o.last_activity.map(|last| o.now.saturating_sub(last as u64));
    if let Some(age) = age
        && age < threshold
        && quiet.is_none_or(|quiet| quiet >= age)
    {
        return Decision::Stay(format!("task started {age} s ago, younger than the idle window"));
    }
    match quiet.map(|quiet| age.map_or(quiet, |age| quiet.min(age))) {
        Some(idle) if idle < threshold => Decision::Stay(format!("activity {idle} s ago")),
        Some(idle) => Decision::Sleep(match o.max_connections.filter(|c| *c > 0.0) {
            Some(open) => format!("no traffic for {idle} s ({open} agent connection(s) open but idle)"),
            None => format!("no connections and no traffic for {idle} s"),
        }),
        None if age.is_none() => Decision::Stay("no task has started yet".into()),
        None => Decision::Sleep(format!("no metrics for {} min from a task older than that", threshold / 60)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn obs(desired: i32, started_ago: Option<u64>, connections: Option<f64>, activity_ago: Option<u64>) -> Observation {
        Observation {
            desired,
            now: NOW,
            task_started_at: started_ago.map(|a| NOW - a),
            max_connections: connections,
            last_activity: activity_ago.map(|a| (NOW - a) as f64),
            idle_threshold: Duration::from_secs(15 * 60),
        }
    }

    #[test]
    fn table() {
        let sleep = |d: &Decision| matches!(d, Decision::Sleep(_));
        let cases = [
            // (observation, sleeps?, description)
            (obs(1, Some(3600), Some(0.0), Some(1800)), true, "idle for 30 min"),
            (obs(1, Some(3600), None, Some(1800)), true, "only activity metric, old"),
            (obs(1, Some(3600), Some(1.0), Some(1800)), true, "a connection is open but idle for 30 min"),
            (obs(1, Some(3600), Some(2.0), Some(60)), false, "connected and active"),
            (obs(1, Some(120), Some(1.0), None), false, "young task, connected, no activity metric yet"),
            (obs(1, Some(3600), Some(0.0), Some(60)), false, "recent activity"),
            (obs(1, Some(3600), Some(0.0), Some(899)), false, "activity just inside the window"),
            (obs(1, Some(3600), Some(0.0), Some(900)), true, "activity exactly at the threshold"),
            (obs(1, Some(120), None, None), false, "young task, no metrics yet"),
            (obs(1, Some(3600), None, None), true, "old task, no metrics at all"),
            (obs(1, None, None, None), false, "no task started yet"),
            (obs(0, Some(3600), Some(0.0), Some(1800)), false, "already stopped"),
            // Metrics are one series per service: the previous task's.
            (obs(1, Some(120), Some(0.0), Some(2400)), false, "woken 2 min ago, the previous task idle 40 min"),
            (obs(1, Some(1200), Some(0.0), Some(2400)), true, "woken 20 min ago, idle since"),
        ];
        for (observation, sleeps, description) in cases {
            assert_eq!(sleep(&decide(&observation)), sleeps, "{description}: {:?}", decide(&observation));
        }
        assert_eq!(decide(&obs(0, None, None, None)), Decision::AlreadyStopped);
    }
}
