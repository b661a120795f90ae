//! The operator commands' answers for people: the admin API's JSON turned into a few lines
//! and small tables, times relative to now ("expires in 4m"). Reads the JSON loosely: an
//! instance of another version may add or lack fields.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `GET /status` (and `DELETE /guard`'s answer).
pub fn status(doc: &Value, now: OffsetDateTime) -> String {
    let mut out = Vec::new();
    if doc["guarded"].as_bool() == Some(true) {
        let mut line = "GUARDED".to_owned();
        if let Some(since) = time_of(&doc["since"]) {
            line += &format!(" since {} ({})", clock(since), relative(since, now));
        }
        line += &format!(
            ": writes are answered 503, Retry-After {}s",
            doc["retry_after"].as_u64().unwrap_or_default()
        );
        if let Some(eta) = time_of(&doc["eta"]) {
            line += &format!("; expected back {}", relative(eta, now));
        }
        out.push(line);
    } else {
        out.push("not guarded: writes pass through".to_owned());
    }
    let engagements = doc["engagements"].as_array().cloned().unwrap_or_default();
    if !engagements.is_empty() {
        let rows = engagements
            .iter()
            .map(|e| {
                vec![
                    text(&e["id"]),
                    text(&e["source"]),
                    text(&e["reason"]),
                    time_of(&e["since"]).map_or_else(String::new, |t| relative(t, now)),
                    time_of(&e["expires_at"])
                        .map_or_else(String::new, |t| format!("expires {}", relative(t, now))),
                ]
            })
            .collect();
        out.push(table(&["ID", "SOURCE", "REASON", "SINCE", "EXPIRES"], rows));
    }
    let (held, in_flight) = (&doc["held"], &doc["in_flight_writes"]);
    if held.is_number() || in_flight.is_number() {
        out.push(format!(
            "held writes: {}, writes in flight: {}",
            held.as_u64().unwrap_or_default(),
            in_flight.as_u64().unwrap_or_default()
        ));
    }
    if let Some(problem) = doc["problem"].as_str() {
        out.push(format!("problem: {problem}"));
    }
    let store = &doc["store"];
    let replicas = doc["replicas"].as_array().cloned().unwrap_or_default();
    let store_news =
        store["ok"].as_bool() == Some(false) || store["failsafe"].as_bool() == Some(true);
    if replicas.len() > 1 || store_news {
        out.push(format!(
            "store: {}, {}{}, version {}",
            text(&store["backend"]),
            if store["ok"].as_bool() == Some(false) {
                "NOT confirmed"
            } else {
                "ok"
            },
            if store["failsafe"].as_bool() == Some(true) {
                ", FAIL-SAFE (guarding writes)"
            } else {
                ""
            },
            store["version"].as_u64().unwrap_or_default()
        ));
    }
    if replicas.len() > 1 {
        let rows = replicas
            .iter()
            .map(|r| {
                vec![
                    text(&r["id"]),
                    text(&r["address"]),
                    text(&r["pid"]),
                    text(&r["version"]),
                    if r["failsafe"].as_bool() == Some(true) {
                        "fail-safe"
                    } else {
                        ""
                    }
                    .to_owned(),
                    time_of(&r["seen"])
                        .map_or_else(String::new, |t| format!("seen {}", relative(t, now))),
                ]
            })
            .collect();
        out.push(table(
            &["REPLICA", "ADDRESS", "PID", "VERSION", "", "SEEN"],
            rows,
        ));
    }
    out.join("\n")
}

/// `POST /guard`'s answer: the engagement (and, after `--wait all`, the replicas).
pub fn engaged(doc: &Value, now: OffsetDateTime) -> String {
    let mut line = format!(
        "engaged: {} ({}, id {})",
        text(&doc["reason"]),
        text(&doc["source"]),
        text(&doc["id"])
    );
    if let Some(t) = time_of(&doc["expires_at"]) {
        line += &format!(", expires {}", relative(t, now));
    }
    if let Some(replicas) = doc["replicas"].as_array() {
        let ids: Vec<String> = replicas.iter().map(|r| text(&r["id"])).collect();
        line += &format!("\napplied by {} replica(s): {}", ids.len(), ids.join(", "));
    }
    line
}

/// `GET /history`.
pub fn history(doc: &Value) -> String {
    let records = doc.as_array().cloned().unwrap_or_default();
    if records.is_empty() {
        return "no audit records".to_owned();
    }
    let rows = records
        .iter()
        .map(|r| {
            vec![
                time_of(&r["when"]).map_or_else(|| text(&r["when"]), utc),
                text(&r["action"]),
                text(&r["source"]),
                text(&r["actor"]),
                text(&r["reason"]),
                if r["engaged"].as_bool() == Some(true) {
                    "guarded"
                } else {
                    "not guarded"
                }
                .to_owned(),
            ]
        })
        .collect();
    table(
        &["WHEN (UTC)", "ACTION", "SOURCE", "ACTOR", "REASON", "AFTER"],
        rows,
    )
}

/// `GET /deploys`.
pub fn deploys(doc: &Value) -> String {
    let deploys = doc.as_array().cloned().unwrap_or_default();
    if deploys.is_empty() {
        return "no deploys seen".to_owned();
    }
    let rows = deploys
        .iter()
        .map(|d| {
            vec![
                time_of(&d["started_at"]).map_or_else(|| text(&d["started_at"]), utc),
                text(&d["type"]),
                text(&d["state"]),
                text(&d["result"]),
                d["duration_seconds"]
                    .as_f64()
                    .map_or_else(|| "running".to_owned(), |s| span(s.round() as i64)),
            ]
        })
        .collect();
    table(
        &["STARTED (UTC)", "TYPE", "STATE", "RESULT", "DURATION"],
        rows,
    )
}

/// `POST /reload`'s answer, when the file was applied.
pub fn reloaded(doc: &Value) -> String {
    let changed: Vec<String> = doc["changed"]
        .as_array()
        .map(|c| c.iter().map(text).collect())
        .unwrap_or_default();
    if changed.is_empty() {
        "config reloaded: nothing changed".to_owned()
    } else {
        format!("config reloaded:\n  {}", changed.join("\n  "))
    }
}

/// A JSON value as a cell: strings bare, `null` empty.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn time_of(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()
}

/// `2025-01-31 12:03:04`, in UTC.
fn utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `12:03:04 UTC`.
fn clock(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second())
}

/// `in 4m 10s`, `4m 10s ago`, or `just now`.
fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (t - now).whole_seconds();
    match secs {
        1.. => format!("in {}", span(secs)),
        0 => "just now".to_owned(),
        _ => format!("{} ago", span(-secs)),
    }
}

/// A length of time in its two largest units: `45s`, `4m 10s`, `2h 5m`, `3d 4h`.
fn span(secs: i64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, n)| secs >= *n) else {
        return "0s".to_owned();
    };
    let (big, n) = units[first];
    let mut out = format!("{}{big}", secs / n);
    if let Some((small, m)) = units.get(first + 1) {
        let rest = (secs % n) / m;
        if rest > 0 {
            out += &format!(" {rest}{small}");
        }
    }
    out
}

/// Columns padded to their widest cell, two spaces apart.
fn table(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    std::iter::once(line(head.to_vec()))
        .chain(
            rows.iter()
                .map(|r| line(r.iter().map(String::as_str).collect())),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-01-31 12:00:00 UTC);

    #[test]
    fn a_guarded_status_lists_each_engagement_with_its_expiry() {
        let doc = json!({
            "guarded": true, "since": "2025-01-31T11:56:00Z", "retry_after": 30, "eta": null,
            "engagements": [
                {"id": "m-1", "source": "manual", "reason": "db migration",
                 "since": "2025-01-31T11:56:00Z", "expires_at": "2025-01-31T12:04:00Z"},
                {"id": "u-2", "source": "upsun", "reason": "Upsun environment.push in progress",
                 "since": "2025-01-31T11:59:30Z", "expires_at": "2025-01-31T13:00:00Z"}
            ],
            "held": 2, "in_flight_writes": 0,
            "store": {"backend": "file", "ok": true, "version": 3, "failsafe": false},
            "replicas": [{"id": "a", "address": "127.0.0.1:8080", "pid": 1, "version": 3,
                          "failsafe": false, "seen": "2025-01-31T12:00:00Z"}]
        });
        let shown = status(&doc, NOW);
        let expected = "\
GUARDED since 11:56:00 UTC (4m ago): writes are answered 503, Retry-After 30s
ID   SOURCE  REASON                              SINCE    EXPIRES
m-1  manual  db migration                        4m ago   expires in 4m
u-2  upsun   Upsun environment.push in progress  30s ago  expires in 1h
held writes: 2, writes in flight: 0";
        assert_eq!(shown, expected);
    }

    #[test]
    fn replicas_and_the_store_show_when_there_are_several_or_trouble() {
        let replica = |id: &str, failsafe: bool| {
            json!({"id": id, "address": "10.0.0.1:8080", "pid": 7, "version": 4,
                   "failsafe": failsafe, "seen": "2025-01-31T11:59:59Z"})
        };
        let doc = json!({
            "guarded": false, "retry_after": 30, "engagements": [], "held": 0,
            "in_flight_writes": 1,
            "store": {"backend": "redis", "ok": true, "version": 4, "failsafe": false},
            "replicas": [replica("wg-0", false), replica("wg-1", true)]
        });
        let shown = status(&doc, NOW);
        assert!(
            shown.starts_with("not guarded: writes pass through\n"),
            "{shown}"
        );
        assert!(shown.contains("store: redis, ok, version 4"), "{shown}");
        assert!(
            shown.contains("wg-1     10.0.0.1:8080  7    4        fail-safe  seen 1s ago"),
            "{shown}"
        );
    }

    #[test]
    fn history_deploys_and_reloads_read_as_tables_and_lines() {
        let records = json!([{"when": "2025-01-31T11:00:00Z", "source": "api", "actor": "operator",
            "action": "engage", "reason": "db", "engagement": "m-1", "engaged": true}]);
        assert_eq!(
            history(&records),
            "WHEN (UTC)           ACTION  SOURCE  ACTOR     REASON  AFTER\n\
             2025-01-31 11:00:00  engage  api     operator  db      guarded"
        );
        assert_eq!(history(&json!([])), "no audit records");
        let seen = json!([
            {"id": "a", "type": "environment.push", "state": "complete", "result": "success",
             "started_at": "2025-01-31T10:00:00Z", "ended_at": "2025-01-31T10:03:12Z",
             "duration_seconds": 192.0},
            {"id": "b", "type": "environment.push", "state": "in_progress", "result": null,
             "started_at": "2025-01-31T11:00:00Z", "ended_at": null, "duration_seconds": null}
        ]);
        let shown = deploys(&seen);
        assert!(shown.contains("complete     success  3m 12s"), "{shown}");
        assert!(shown.ends_with("in_progress           running"), "{shown}");
        assert_eq!(deploys(&json!([])), "no deploys seen");
        assert_eq!(
            reloaded(
                &json!({"reloaded": true, "changed": ["guard.hold 10s -> 20s"], "errors": []})
            ),
            "config reloaded:\n  guard.hold 10s -> 20s"
        );
        assert_eq!(
            reloaded(&json!({"reloaded": true, "changed": [], "errors": []})),
            "config reloaded: nothing changed"
        );
    }

    #[test]
    fn spans_keep_two_units() {
        for (secs, shown) in [
            (0, "0s"),
            (45, "45s"),
            (250, "4m 10s"),
            (3600, "1h"),
            (7500, "2h 5m"),
            (273_600, "3d 4h"),
        ] {
            assert_eq!(span(secs), shown);
        }
    }
}
