//! The hot-path targets (the issue "Hot paths close to the machine's limits"): each figure next
//! to the limit it is compared with, both measured in this run. Read from the loads of the
//! groups `foundation` (login, refresh, `/identity/me`, JWKS, the storm, memory, and the bare
//! axum routes serving the JWKS's and the discovery document's bytes) and `oauth`
//! (client credentials, introspection, discovery); a target whose loads were not run is left out.

use crate::{Baselines, Load, MIB, Report, Results, mib, oauth};

/// The bare axum route serving the JWKS's bytes, at concurrency 64.
pub(crate) const BARE_JWKS: &str = "bare axum (JWKS bytes)";
/// The bare axum route serving the discovery document's bytes, at concurrency 64.
pub(crate) const BARE_DISCOVERY: &str = "bare axum (discovery bytes)";
/// The concurrency the targets are stated at.
const C: usize = 64;
const P99_MS: f64 = 10.0;

pub(crate) fn render(rep: &mut Report, r: &Results, b: &Baselines) {
    let all: Vec<&Load> = r.loads.iter().chain(oauth::loads(r)).collect();
    let find = |label: &str, c: usize| {
        all.iter()
            .copied()
            .find(|l| l.label == label && l.concurrency == c)
    };
    if find(BARE_JWKS, C).is_none() && find("cc RS256", C).is_none() {
        return;
    }
    rep.section("Hot-path targets (per second of server CPU, concurrency 64 unless said; limits from this run)");
    let rs256 = b
        .signing
        .iter()
        .find(|(alg, _, _)| *alg == "RS256")
        .map_or(f64::NAN, |(_, sign, _)| 1e6 / sign);
    let argon2 = b.hashes_per_cpu_second();
    rep.line(&format!(
        "Limits: RS256 {rs256:.0} signatures per CPU-second and Argon2id {argon2:.1} hashes per CPU-second (in process, above);"
    ));
    rep.line("bare axum routes serving the same bytes as the JWKS and the discovery document (rows above).");

    for (route, bare) in [("jwks RS256", BARE_JWKS), ("discovery", BARE_DISCOVERY)] {
        if let (Some(load), Some(limit)) = (find(route, C), find(bare, C)) {
            let ratio = load.ok_per_server_cpu_second() / limit.ok_per_server_cpu_second();
            rep.check(
                &format!("{route}: share of the bare route"),
                &format!(
                    "{:.0} / {:.0} = {:.0}%",
                    load.ok_per_server_cpu_second(),
                    limit.ok_per_server_cpu_second(),
                    ratio * 100.0
                ),
                ">= 60%",
                ratio >= 0.6,
            );
        }
    }
    for route in ["introspect", "me RS256"] {
        if let Some(load) = find(route, C) {
            let per_cpu = load.ok_per_server_cpu_second();
            rep.check(
                route,
                &format!("{per_cpu:.0} /CPU-s"),
                ">= 25000 /CPU-s",
                per_cpu >= 25_000.0,
            );
        }
    }
    for (route, share) in [("cc RS256", 0.9), ("refresh RS256", 0.7)] {
        if let Some(load) = find(route, C) {
            let ratio = load.ok_per_server_cpu_second() / rs256;
            rep.check(
                &format!("{route}: share of RS256 signatures"),
                &format!(
                    "{:.0} / {rs256:.0} = {:.0}%",
                    load.ok_per_server_cpu_second(),
                    ratio * 100.0
                ),
                &format!(">= {:.0}%", share * 100.0),
                ratio >= share,
            );
        }
    }
    for c in [1, 16, 64] {
        if let Some(load) = find("login RS256", c) {
            let ratio = load.ok_per_server_cpu_second() / argon2;
            rep.check(
                &format!("login x{c}: share of Argon2id hashes"),
                &format!(
                    "{:.1} / {argon2:.1} = {:.0}%",
                    load.ok_per_server_cpu_second(),
                    ratio * 100.0
                ),
                ">= 90%",
                ratio >= 0.9,
            );
        }
    }
    if let Some(s) = &r.storm
        && let Some((undisturbed, _)) = s.undisturbed_me
    {
        let during = s.me.ok_per_second();
        rep.check(
            "me x16 during the login storm: share of undisturbed",
            &format!(
                "{during:.0} / {undisturbed:.0} = {:.0}%",
                during / undisturbed * 100.0
            ),
            ">= 70%",
            during >= undisturbed * 0.7,
        );
        let p99 = s.me.stats.percentile_ms(0.99);
        rep.check(
            "me x16 p99 during the login storm",
            &format!("{p99:.2} ms"),
            &format!("< {P99_MS} ms"),
            p99 < P99_MS,
        );
    }
    for route in ["jwks RS256", "discovery", "introspect", "me RS256"] {
        if let Some(load) = find(route, C) {
            let p99 = load.stats.percentile_ms(0.99);
            rep.check(
                &format!("{route} p99"),
                &format!("{p99:.2} ms"),
                &format!("< {P99_MS} ms"),
                p99 < P99_MS,
            );
        }
    }
    if let Some(idle) = r.default_idle_rss {
        rep.check(
            "idle RSS, fresh default server",
            &format!("{:.1} MiB", mib(idle)),
            "<= 16 MiB",
            (idle as f64) <= 16.0 * MIB,
        );
    }
    if let Some(s) = &r.storm {
        rep.check(
            "peak RSS during the login storm",
            &format!("{:.1} MiB", mib(s.peak_rss)),
            "<= 64 MiB",
            (s.peak_rss as f64) <= 64.0 * MIB,
        );
    }
    if let Some(m) = &r.memory {
        let sessions = m.load.stats.ok() as f64;
        let growth = m.after_rss.saturating_sub(m.warm_rss) as f64 / sessions.max(1.0);
        rep.check(
            "RSS per idle session (growth from the warm server)",
            &format!("{growth:.0} B"),
            "<= 64 B",
            growth <= 64.0,
        );
    }
}
