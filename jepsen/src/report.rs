//! What a run leaves in its results folder: each workload's history (JSON lines, one event
//! per line, Jepsen's keys), the verdict (`verdict.json`), and a timeline a browser opens
//! (`timeline.html`: one lane per process, one bar per operation coloured by outcome, the
//! faults as shaded bands).

use crate::history::{pairs, Op, Process, Type};
use crate::nemesis::Window;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub fn write_history(path: &Path, history: &[Op]) -> anyhow::Result<()> {
    let mut out = String::new();
    for op in history {
        out += &serde_json::to_string(op)?;
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Availability by fault: of the client operations invoked while a fault of that kind was in
/// force (or none was), how many the cluster served: it succeeded, or it was refused for what
/// it asked (a compare-and-set that did not match, a transfer from an empty account), not
/// because the cluster could not answer (no connection, a timeout, a 5xx). Final reads after
/// healing are left out.
pub fn availability(histories: &[(&str, Vec<Op>)], windows: &[Window], end_ns: u64) -> Value {
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (_, h) in histories {
        for p in pairs(h) {
            if p.invoke.time > end_ns {
                continue;
            }
            let t = p.invoke.time;
            let name = windows
                .iter()
                .find(|w| w.start <= t && t < w.end)
                .map_or_else(|| "none".to_string(), |w| w.name.clone());
            let e = by.entry(name).or_default();
            e.1 += 1;
            let served = match (p.outcome(), p.complete.and_then(|c| c.error.as_deref())) {
                (Type::Ok, _) => true,
                (Type::Fail, Some(e)) => !(e.starts_with("connect") || e.starts_with("unknown")),
                _ => false,
            };
            if served {
                e.0 += 1;
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (name, (ok, all)) in by {
        out.insert(
            name,
            json!({ "ok": ok, "ops": all, "fraction": if all == 0 { 0.0 } else { ok as f64 / all as f64 } }),
        );
    }
    Value::Object(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The timeline as one HTML page with an inline SVG.
pub fn timeline(title: &str, histories: &[(&str, Vec<Op>)], windows: &[Window]) -> String {
    let end = histories
        .iter()
        .flat_map(|(_, h)| h.last().map(|o| o.time))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (width, lane, left) = (1600.0, 6.0, 110.0);
    // Lanes: each workload's processes, in order.
    let mut lanes: Vec<(String, Process)> = Vec::new();
    for (w, h) in histories {
        let mut ps: Vec<Process> = h
            .iter()
            .map(|o| o.process)
            .filter(|p| *p != Process::Nemesis)
            .collect();
        ps.sort();
        ps.dedup();
        lanes.extend(ps.into_iter().map(|p| (w.to_string(), p)));
    }
    let height = 40.0 + lane * lanes.len() as f64 + 20.0;
    let x = |t: u64| left + (t as f64 / end) * (width - left - 10.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">"#
    );
    for w in windows {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="20" width="{:.1}" height="{:.1}" fill="#f4c0c0" opacity="0.5"><title>{}</title></rect><text x="{:.1}" y="14">{}</text>"##,
            x(w.start),
            (x(w.end) - x(w.start)).max(1.0),
            height - 40.0,
            esc(&serde_json::to_string(&w.fault).unwrap_or_default()),
            x(w.start),
            esc(&w.name)
        );
    }
    let mut last_workload = String::new();
    for (i, (w, p)) in lanes.iter().enumerate() {
        let y = 20.0 + lane * i as f64;
        if *w != last_workload {
            let _ = write!(svg, r#"<text x="2" y="{:.1}">{}</text>"#, y + 8.0, esc(w));
            let _ = write!(
                svg,
                r##"<line x1="{left}" x2="{width}" y1="{y:.1}" y2="{y:.1}" stroke="#999"/>"##
            );
            last_workload = w.clone();
        }
        let h = &histories
            .iter()
            .find(|(n, _)| n == w)
            .expect("lane's workload")
            .1;
        for pair in pairs(h).iter().filter(|q| q.invoke.process == *p) {
            let end_t = pair.complete.map_or(end as u64, |c| c.time);
            let colour = match pair.outcome() {
                Type::Ok => "#4caf50",
                Type::Fail => "#e53935",
                _ => "#ff9800",
            };
            let tip = format!(
                "{} {} {} → {} {}",
                pair.invoke.index,
                pair.invoke.f,
                pair.invoke.value,
                pair.complete.map_or("pending".to_string(), |c| format!(
                    "{:?} {}",
                    c.kind, c.value
                )),
                pair.complete
                    .and_then(|c| c.error.clone())
                    .unwrap_or_default()
            );
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}</title></rect>"#,
                x(pair.invoke.time),
                y + 0.5,
                (x(end_t) - x(pair.invoke.time)).max(0.8),
                lane - 1.0,
                esc(&tip)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{left}" y="{:.1}">0 s</text><text x="{:.1}" y="{:.1}" text-anchor="end">{:.1} s</text></svg>"#,
        height - 4.0,
        width - 10.0,
        height - 4.0,
        end / 1e9
    );
    format!(
        "<!doctype html><meta charset=\"utf-8\"><title>{t}</title><h3>{t}</h3>\
         <p>green: ok, red: failed, orange: unknown (info); shaded: faults (hover for details)</p>{svg}",
        t = esc(title)
    )
}
