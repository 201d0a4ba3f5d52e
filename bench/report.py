"""The short markdown tables of a results JSON (bench/results/latest.md, quoted in docs/performance.md)."""

from __future__ import annotations

from typing import Any


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def markdown(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    lines = [
        f"# AEGIS benchmark results ({r.get('started', '?')})",
        "",
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu')}), {m.get('memory_gib')} GiB, Python {m.get('python')}, "
        f"load average at start {m.get('loadavg_at_start')}. Command: `{r.get('command')}`; took {r.get('total_s')} s.",
        "Shared machine: other processes ran beside the benchmark, so compare ratios within this run.",
        "",
    ]
    e = r.get("engine")
    if e and "cases" in e:
        lines += ["## Engine (`evaluate()`, in process)", ""]
        rows = [
            [
                c["rules"],
                c["layout"],
                c["max_rules_per_capability"],
                c["p50_us"],
                c["p99_us"],
                c["decisions_per_s"],
                c["load_s"],
                c["compile_s"],
            ]
            for c in e["cases"]
        ]
        lines += _table(
            [
                "rules",
                "layout",
                "rules seen per decision",
                "p50 µs",
                "p99 µs",
                "decisions/s (1 core)",
                "load s",
                "compile s",
            ],
            rows,
        )
        b = e["baseline_proposal_model_validate"]
        lines += [
            f"Baseline (same run): `Proposal.model_validate` alone p50 {b['p50_us']} µs. "
            f"p50 at 10,000 rules / p50 at 100 rules: {e['ratio_p50_10000_over_100']}×. Targets: {e['targets']}",
            "",
        ]
    p = r.get("peers")
    if p:
        agt = p.get("agent_governance_toolkit", {})
        lines += ["## Peers (same run)", ""]
        if "cases" in agt:
            ours = {c["rules"]: c for c in (e or {}).get("cases", []) if "per capability" in c.get("layout", "")}
            rows = []
            for c in agt["cases"]:
                mine = ours.get(c["rules"], {})
                rows.append([c["rules"], c["p50_us"], c["p99_us"], mine.get("p50_us", "-"), mine.get("p99_us", "-")])
            lines += _table(
                ["rules", "AGT PolicyEvaluator p50 µs", "AGT p99 µs", "AEGIS evaluate p50 µs", "AEGIS p99 µs"], rows
            )
        else:
            lines += [f"Agent Governance Toolkit: {agt.get('skipped', agt.get('error'))}", ""]
        acs = p.get("agent_control_server", {})
        if "results" in acs:
            ours = {c["rules"]: c for c in (e or {}).get("cases", []) if "per capability" in c.get("layout", "")}
            rows = [
                [
                    c["rules"],
                    c["applicable"],
                    c["p50_us"],
                    c["p99_us"],
                    ours.get(c["rules"], {}).get("p50_us", "-"),
                    ours.get(c["rules"], {}).get("p99_us", "-"),
                ]
                for c in acs["results"]
            ]
            lines += [f"Galileo {acs['peer']}, Python {acs['python']}, a separate process:", ""]
            lines += _table(
                ["rules", "controls applicable", "Galileo p50 µs", "Galileo p99 µs", "AEGIS p50 µs", "AEGIS p99 µs"],
                rows,
            )
        else:
            lines += [f"Galileo agent-control-server: {acs.get('skipped', acs.get('error', '?'))}", ""]
    s = r.get("server")
    if s and "baseline" in s:
        lines += [
            "## Server (`POST /api/v1/governance/propose`, separate load process)",
            "",
            f"{s['serving']}. Fixed concurrency: {s['load_generator']['fixed_concurrency']}; fixed rate: "
            f"{s['load_generator']['fixed_rate']}. {s['duration_s_per_point']} s per point.",
            "",
        ]
        rows = []
        for label, key in (
            ("bare FastAPI baseline", "baseline"),
            ("AEGIS, SQLite", "sqlite"),
            ("AEGIS, PostgreSQL", "postgres"),
        ):
            d = s.get(key, {})
            if "concurrency" not in d:
                rows.append([label, d.get("skipped", d.get("error", "-")), "", "", ""])
                continue
            for c, v in d["concurrency"].items():
                cpu = v.get("server_cpu_us_per_request", "-")
                rows.append([label, f"{c} connections", v["rps"], v["p50_ms"], v["p99_ms"], cpu])
            for rate, v in d["offered_rate"].items():
                rows.append([label, f"{rate}/s offered", v["rps"], v["p50_ms"], v["p99_ms"], "-"])
        lines += _table(["server", "load", "answered/s", "p50 ms", "p99 ms", "server CPU µs/request"], rows)
        for key in ("sqlite", "postgres"):
            d = s.get(key, {})
            if "concurrency" in d:
                lines.append(
                    f"- {key}: ratio at 32 connections vs baseline {d.get('ratio_rps32_vs_baseline')} (requests/s), "
                    f"{d.get('ratio_cpu_per_request32_baseline_over_aegis')} (CPU per request, baseline / AEGIS); "
                    f"{d['decisions_stored']} decisions stored for {d['answered_2xx_measured']} answered in the "
                    f"measured points (plus warm-up); chain: {d['chain']['message']}; "
                    f"RSS after {d['rss_mib_after']} MiB"
                )
        lines += ["", f"Targets: {s.get('targets')}", ""]
    k = r.get("sdk")
    if k and "sync" in k:
        lines += ["## SDK (`propose()` vs raw httpx, same server, sequential)", ""]
        rows = [
            [
                mode,
                k[mode]["raw_httpx"]["p50_us"],
                k[mode]["sdk"]["p50_us"],
                k[mode]["ratio_p50_sdk_over_raw"],
                k[mode]["connections_after"]["sdk"],
            ]
            for mode in ("sync", "async")
        ]
        lines += _table(["client", "raw httpx p50 µs", "SDK p50 µs", "ratio", "pool connections after"], rows)
        par = k["async"]["parallel"]
        lines += [
            f"100 parallel `propose()` on one AsyncAegisClient: {par['decided']} decided in {par['wall_s']} s "
            f"({par['decisions_per_s']}/s), {par['pool_connections_after']} pooled connections. "
            f"Targets: {k['targets']}",
            "",
        ]
    a = r.get("adapters")
    if a and "rows" in a:
        lines += [
            "## Adapters (governed vs the same call ungoverned, sequential, one server)",
            "",
            f"One server round trip (raw httpx POST of a proposal): p50 {a['round_trip_p50_us']} µs. "
            f"{a['calls_per_point']} calls per point; governed calls propose, run on ALLOW, queue the execution "
            "report for the client's background reporter. Requests per governed call: counted by an httpx hook on "
            f"the SDK client over {a.get('counted_calls', '?')} calls (a separate pass), sent on the caller's path "
            "vs by the reporter (batched), after a final flush.",
            "",
        ]
        lines += _table(
            [
                "adapter",
                "ungoverned p50 µs",
                "governed p50 µs",
                "added p50 µs",
                "added / round trip",
                "requests on caller's path / call",
                "reporter requests / call",
            ],
            [
                [
                    row["adapter"],
                    row["ungoverned_p50_us"],
                    row["governed_p50_us"],
                    row["added_p50_us"],
                    row["added_in_round_trips"],
                    row.get("caller_requests_per_call", "—"),
                    row.get("reporter_requests_per_call", "—"),
                ]
                for row in a["rows"]
            ],
        )
    lines += _otel(r.get("otel"))
    c = r.get("scale")
    if c and "queries" in c:
        lines += [
            f"## Scale ({c['audit_records']:,} audit records, {c['database_mib']} MiB SQLite, "
            f"filled in {c['fill_s']} s)",
            "",
        ]
        lines += _table(["query", "p50 ms", "p99 ms"], [[n, v["p50_ms"], v["p99_ms"]] for n, v in c["queries"].items()])
        lines += [f"Server RSS: {c['server_rss_mib']}", ""]
    m = (c or {}).get("memory_through_decisions")
    if m:
        reached = "" if m["reached_target"] else f" (the run's time ran out before {m['target_decisions']:,})"
        lines += [
            f"### Server memory through {m['decisions']:,} decisions{reached}",
            "",
            f"`aegis-server serve` on SQLite, `POST /propose` at 64 connections for {m['seconds']} s; resident "
            f"memory after each chunk. Growth: {m['rss_growth_mib_per_100k_decisions']} MiB per 100,000 decisions "
            "after the warm-up.",
            "",
        ]
        lines += _table(["decisions answered", "RSS MiB"], [[f"{n:,}", rss] for n, rss in m["rss_mib"]])
    for name in ("engine", "peers", "server", "sdk", "adapters", "otel", "scale"):
        if isinstance(r.get(name), dict) and "error" in r[name]:
            lines += [f"**{name} failed**: {r[name]['error']}", ""]
    lines += _boundaries(r.get("boundaries"))
    lines += _trust(r.get("trust"))
    return "\n".join(lines)


def _otel(o: Any) -> list[str]:
    """Issue 19's tracing cost, off and on (bench/otel.py)."""
    if not o or "sdk" not in o or "server" not in o:
        return []
    k, s = o["sdk"], o["server"]
    lines = [
        "## OpenTelemetry (tracing off = no provider, the default; on = an SDK provider, every span exported)",
        "",
        f"SDK `propose()` against a fixed in-process answer: p50 {k['off']['p50_us']} µs off, {k['on']['p50_us']} µs "
        f"on ({k['ratio_p50_on_over_off']}×, +{k['added_p50_us_on']} µs).",
        "",
    ]
    rows = [
        [mode, s[mode]["rps"], s[mode]["p99_ms"], s.get(f"ratio_rps_{mode}_over_off", 1.0)]
        for mode in ("off", "on_sampled", "on_not_sampled")
    ]
    lines += _table(["`aegis-server serve`, SQLite, 32 connections", "decisions/s", "p99 ms", "× off"], rows)
    return [*lines, f"The collector stub received {s['collector_received']}.", ""]


def _boundaries(b: Any) -> list[str]:
    """Issue 13's engine boundaries: the condition budget and the keyed hashes (bench/boundaries.py)."""
    if not b or "engine_100_rules" not in b:
        return []
    lines = ["## Engine boundaries (condition budget, keyed hashes)", ""]
    rows = []
    for label, case in b["engine_100_rules"].items():
        rows.append([label, case["with_budget"]["p50_us"], case["without_budget"]["p50_us"], case["p50_ratio"]])
    lines += _table(["rule set", "p50 µs with budget", "p50 µs without", "ratio"], rows)
    k = b["keyed_hashes"]
    lines += _table(
        ["hash", "HMAC-SHA256 ns", "SHA-256 ns", "ratio"],
        [
            ["params_hash", k["params_hash_hmac_ns"], k["params_hash_sha256_ns"], k["params_hash_ratio"]],
            [
                "sensitive value",
                k["sensitive_value_hmac_ns"],
                k["sensitive_value_sha256_ns"],
                k["sensitive_value_ratio"],
            ],
        ],
    )
    f = b["finding_6"]
    lines += [
        "Finding 6 (3,000 recipients): library without budget "
        f"{f['library_without_budget_3000_recipients_s_extrapolated']} s "
        f"(9x the 1,000-recipient run), decision with budget {f['decision_with_budget_3000_recipients_ms_p50']} ms.",
        "",
    ]
    c = b["calibration"]
    lines += _table(
        ["shape at budget " + str(c["budget"]), "n", "units", "library ms", "ns/unit"],
        [[s["shape"], s["n_at_budget"], s["estimated_units"], s["library_ms"], s["ns_per_unit"]] for s in c["shapes"]],
    )
    for key, label in (
        ("health_under_attack", "the finding's condition"),
        ("health_under_same_load_condition_true", "the condition `true` (baseline)"),
    ):
        h = b.get(key)
        if h:
            lines += [
                f"/health while {h['attackers']} clients sent {h['costly_proposals']} 3,000-recipient proposals "
                f"under {label}: p50 {h['health_ms_p50']} ms, p99 {h['health_ms_p99']} ms, "
                f"max {h['health_ms_max']} ms.",
                "",
            ]
    return lines


def _trust(t: Any) -> list[str]:
    """Issue 13's keys and audit chain: each cost beside its baseline of the same run (bench/keys.py,
    bench/audit_chain.py)."""
    if not t or "keys" not in t or "audit_chain" not in t:
        return []
    lines = ["## Trust boundaries: actor binding, rate limits, keyed audit chain", ""]
    k = t["keys"]
    rows = [[f"actor check: {name}", s["p50_us"], s["p99_us"]] for name, s in k.get("actor_check_us", {}).items()]
    rows += [[f"rate limit: {name}", s["p50_us"], s["p99_us"]] for name, s in k.get("rate_limit_us", {}).items()]
    rows += [[f"whole proposal: {name}", s["p50_us"], s["p99_us"]] for name, s in k.get("propose_us", {}).items()]
    lines += _table(["what (same run)", "p50 µs", "p99 µs"], rows)
    a = t["audit_chain"]
    lines += _table(
        ["audit chain", "v1 SHA-256 µs", "v2 HMAC µs", "ratio"],
        [
            ["one link", a["link_us"]["v1_sha256"], a["link_us"]["v2_hmac"], a["link_ratio_v2_over_v1"]],
            [
                "one decision's records",
                a["per_decision_us"]["v1_sha256"],
                a["per_decision_us"]["v2_hmac"],
                a["per_decision_ratio_v2_over_v1"],
            ],
        ],
    )
    lines += [
        f"Signing a checkpoint: {a['checkpoint_sign_us']} µs; writing it durably: {a['checkpoint_write_ms']} ms "
        "(at most once a second, off the request path).",
        "",
    ]
    return lines
