//! The HTML report of `make bench`: the figures, then SVG plots drawn with plotters, in one file that
//! needs nothing else to open.

use std::fmt::Write as _;

use plotters::{
    coord::{ranged1d::SegmentValue, types::RangedCoordf64},
    prelude::*,
};

use crate::{Cpu, Report, stats};

const WIDTH: u32 = 760;
const HEIGHT: u32 = 280;

/// One line of a time series chart: its name, colour and points.
struct Line<'a> {
    name: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

pub fn html(report: &Report) -> anyhow::Result<String> {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>make bench</title><style>\
         body{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}\
         table{border-collapse:collapse;font-size:14px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}svg{display:block;margin:1em 0}\
         </style></head><body>\n<h1>make bench</h1>\n<table>\n",
    );
    for (name, value) in crate::table_rows(report) {
        writeln!(page, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value))?;
    }
    page.push_str("</table>\n");

    page.push_str(
        "<h2>Orders</h2>\n<p>Closed loop (burst): latency is the service time. Open loop (sustained): \
                   each order is sent at its due time and its latency runs from then.</p>\n",
    );
    for (title, samples) in [("burst", &report.burst.samples), ("sustained", &report.sustained.samples)] {
        page.push_str(&throughput_and_latency(title, "orders/s", samples)?);
    }
    page.push_str(
        "<h2>Freshness</h2>\n<p>Every fourth order: from its 201 to its visibility through the query API.</p>\n",
    );
    page.push_str(&freshness("freshness", &report.freshness)?);
    page.push_str("<h2>Lookups</h2>\n");
    page.push_str(&throughput_and_latency("lookups", "lookups/s", &report.lookups.samples)?);
    if let Some(large) = &report.large {
        page.push_str(&large_tables(large)?);
    }

    page.push_str("<h2>Where the CPU goes</h2>\n");
    page.push_str(&cpu_split(&crate::cpu_phases(report))?);
    if let Some(statements) = &report.sustained.statements {
        page.push_str(
            "<h2>PostgreSQL statements per accepted order</h2>\n<p>pg_stat_statements over the sustained phase, \
             by execution time.</p>\n<table><tr><th>calls</th><th>ms</th><th>rows/call</th><th>database</th>\
             <th>statement</th></tr>\n",
        );
        for st in statements {
            writeln!(
                page,
                "<tr><td class=n>{:.3}</td><td class=n>{:.4}</td><td class=n>{:.1}</td><td>{}</td><td><code>{}</code></td></tr>",
                st.calls_per_order,
                st.ms_per_order,
                st.rows_per_call,
                escape(&st.database),
                escape(&st.query)
            )?;
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

/// The freshness lag of every sampled order, then the orders' throughput and latency.
fn freshness(phase: &str, f: &crate::Freshness) -> anyhow::Result<String> {
    let lags: Vec<(f64, f64)> = f.lags.iter().map(|s| (s.at, s.latency.as_secs_f64() * 1000.0)).collect();
    Ok(scatter(&format!("{phase} lag at {:.0} orders/s (ms)", f.offered_per_s), "ms", &lags)?
        + &throughput_and_latency(&format!("{phase} orders"), "orders/s", &f.order_samples)?)
}

fn large_tables(large: &crate::Large) -> anyhow::Result<String> {
    let mut page = format!(
        "<h2>Large tables</h2>\n<p>After a bulk load of {} products and {} orders through the outbox, applied \
         by the relay and the consumer: the freshness phase at the same rate, then the lookups.</p>\n",
        large.products, large.orders
    );
    page.push_str(&freshness("large tables: freshness", &large.freshness)?);
    page.push_str(&throughput_and_latency("large tables: lookups", "lookups/s", &large.lookups.samples)?);
    page.push_str(
        "<h3>The hot tables after the load</h3>\n<table><tr><th>database</th><th>table</th><th>rows</th>\
         <th>dead rows</th><th>MB</th><th>last autovacuum (UTC)</th></tr>\n",
    );
    for t in &large.tables {
        writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.1}</td><td>{}</td></tr>",
            t.database,
            escape(&t.table),
            t.live_rows,
            t.dead_rows,
            t.megabytes,
            escape(t.last_autovacuum.as_deref().unwrap_or("-"))
        )?;
    }
    page.push_str("</table>\n<h3>Plans on the large tables</h3>\n");
    for p in &large.plans {
        writeln!(page, "<h4>{} ({} database)</h4>\n<pre>{}</pre>", escape(p.what), p.database, escape(&p.plan))?;
    }
    Ok(page)
}

/// Requests per second, and the latency percentiles of each second, over the phase.
fn throughput_and_latency(phase: &str, unit: &str, samples: &[stats::Sample]) -> anyhow::Result<String> {
    let seconds = stats::per_second(samples);
    let rate = [Line { name: unit, color: BLUE, points: seconds.iter().map(|s| (s.second, s.per_s)).collect() }];
    let latency = [
        Line { name: "p50", color: GREEN, points: seconds.iter().map(|s| (s.second, s.p50_ms)).collect() },
        Line {
            name: "p99",
            color: RGBColor(230, 120, 0),
            points: seconds.iter().map(|s| (s.second, s.p99_ms)).collect(),
        },
        Line { name: "max", color: RED, points: seconds.iter().map(|s| (s.second, s.max_ms)).collect() },
    ];
    Ok(timeline(&format!("{phase}: {unit}, second by second"), unit, &rate)?
        + &timeline(&format!("{phase}: latency per second (ms)"), "ms", &latency)?)
}

fn timeline(title: &str, unit: &str, lines: &[Line<'_>]) -> anyhow::Result<String> {
    let x_max = lines.iter().flat_map(|l| &l.points).map(|p| p.0 + 1.0).fold(1.0, f64::max);
    let y_max = lines.iter().flat_map(|l| &l.points).map(|p| p.1).fold(0.0, f64::max) * 1.1 + 1e-9;
    xy_chart(title, "seconds into the phase", unit, (x_max, y_max), true, |chart| {
        for line in lines {
            let color = line.color;
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))?
                .label(line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        Ok(())
    })
}

fn scatter(title: &str, unit: &str, points: &[(f64, f64)]) -> anyhow::Result<String> {
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.02;
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    xy_chart(title, "seconds into the phase (at the 201)", unit, (x_max, y_max), false, |chart| {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 2, BLUE.mix(0.5).filled())))?;
        Ok(())
    })
}

type XyChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// An SVG chart over [0, x_max] × [0, y_max] with its axes described, holding what `draw` puts on it,
/// and the legend of its labelled series if `legend`.
fn xy_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    (x_max, y_max): (f64, f64),
    legend: bool,
    draw: impl FnOnce(&mut XyChart<'_, '_>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw()?;
        draw(&mut chart)?;
        if legend {
            chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// Cores used by each process in each phase, stacked.
fn cpu_split(phases: &[(&str, &Cpu)]) -> anyhow::Result<String> {
    let mut processes: Vec<&str> = Vec::new();
    for (_, cpu) in phases {
        for (name, _) in &cpu.cores {
            if name != "machine" && !processes.contains(&name.as_str()) {
                processes.push(name);
            }
        }
    }
    let cores = |cpu: &Cpu, process: &str| cpu.cores.iter().find(|(n, _)| n == process).map_or(0.0, |(_, c)| *c);
    // Only what used a hundredth of a core somewhere.
    processes.retain(|process| phases.iter().any(|(_, cpu)| cores(cpu, process) >= 0.01));
    let y_max = phases
        .iter()
        .map(|(_, cpu)| cores(cpu, "machine").max(processes.iter().map(|p| cores(cpu, p)).sum()))
        .fold(0.5, f64::max)
        * 1.15;
    let names: Vec<&str> = phases.iter().map(|(name, _)| *name).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH + 140, HEIGHT + 80)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("cores used per process, by phase (the bar's outline: the whole box)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(60)
            // One slot more than there are phases, for the legend.
            .build_cartesian_2d((0..phases.len() as i32 + 1).into_segmented(), 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("cores")
            .x_label_formatter(&|value| match value {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    names.get(*i as usize).map(|n| n.to_string()).unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .draw()?;
        let bar = |i: usize, from: f64, to: f64, style: ShapeStyle| {
            let mut rect =
                Rectangle::new([(SegmentValue::Exact(i as i32), from), (SegmentValue::Exact(i as i32 + 1), to)], style);
            rect.set_margin(0, 0, 30, 30);
            rect
        };
        let mut base = vec![0.0; phases.len()];
        for (index, process) in processes.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            let bars: Vec<_> = phases
                .iter()
                .enumerate()
                .map(|(i, (_, cpu))| {
                    let used = cores(cpu, process);
                    let rect = bar(i, base[i], base[i] + used, color.filled());
                    base[i] += used;
                    rect
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(*process)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart.draw_series(
            phases.iter().enumerate().map(|(i, (_, cpu))| bar(i, 0.0, cores(cpu, "machine"), BLACK.stroke_width(1))),
        )?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::{
        Burst, Ceilings, Drain, Endpoint, Freshness, Large, Lookups, PostgresCpu, Statement, Sustained, large,
        stats::Sample,
    };

    fn samples(per_second: usize, seconds: usize) -> Vec<Sample> {
        (0..per_second * seconds)
            .map(|n| Sample {
                at: n as f64 / per_second as f64,
                latency: Duration::from_micros(1000 + (n as u64 % 97) * 100),
            })
            .collect()
    }

    fn cpu(query: f64) -> Cpu {
        let cores = vec![
            ("machine".into(), 1.9),
            ("postgres analytics_write".into(), 0.9),
            ("query".into(), query),
            ("postgres postgres".into(), 0.0),
        ];
        Cpu { cores, client_share: 0.1, seconds: Default::default() }
    }

    fn freshness(latency: stats::Latency) -> Freshness {
        Freshness {
            offered_per_s: 350.0,
            accepted_per_s: 350.0,
            refused: BTreeMap::new(),
            orders: latency,
            samples: 100,
            lag: latency,
            statements: None,
            cpu: cpu(0.2),
            order_samples: samples(35, 10),
            lags: samples(10, 10),
        }
    }

    fn lookups(latency: stats::Latency) -> Lookups {
        Lookups { clients: 64, per_s: 5000.0, ratio_of_pgbench: 0.33, latency, cpu: cpu(0.8), samples: samples(50, 15) }
    }

    fn report() -> Report {
        let latency = stats::Latency::of(&samples(10, 1));
        let endpoints = || vec![Endpoint { path: "/api/analytics/sync-status".into(), latency }];
        Report {
            ceilings: Ceilings {
                bare_order_tps: 2000.0,
                bare_order_postgres_cpu_ms: 0.7,
                outbox_order_tps: 1700.0,
                outbox_row_cost: 0.15,
                lookups_per_s: 15000.0,
            },
            burst: Burst {
                clients: 32,
                accepted_per_s: 800.0,
                applied_per_s: 800.0,
                rejected: 0,
                latency,
                cpu: cpu(0.0),
                samples: samples(80, 15),
            },
            sustained: Sustained {
                offered_per_s: 700.0,
                accepted_per_s: 700.0,
                applied_per_s: 700.0,
                refused: BTreeMap::new(),
                backlog_at_start: 0,
                backlog_at_end: 0,
                ratio_of_bare: 0.35,
                latency,
                postgres_cpu_ms_per_order: PostgresCpu {
                    write_db: 1.2,
                    read_db: 0.2,
                    background: 0.0,
                    total: 1.4,
                    ratio_of_bare: 2.0,
                },
                statements: Some(vec![Statement {
                    database: "analytics_write".into(),
                    query: "select 1 where 2 < 3".into(),
                    calls_per_order: 1.0,
                    ms_per_order: 0.5,
                    rows_per_call: 1.0,
                }]),
                cpu: cpu(0.0),
                samples: samples(70, 15),
            },
            freshness: freshness(latency),
            drain: Drain { events_per_s: 10000.0, ratio_of_inflow: 14.0 },
            lookups: lookups(latency),
            endpoints: endpoints(),
            large: Some(Large {
                products: 100_000,
                orders: 1_000_000,
                load_seconds: 70.0,
                applied_events_per_s: 9000.0,
                freshness: freshness(latency),
                order_p99_ratio: 1.1,
                lookups: lookups(latency),
                lookup_p99_ratio: 1.2,
                endpoints: endpoints(),
                claim: Some([(0.5, 2.0), (0.6, 2.5)]),
                tables: vec![large::Table {
                    database: "write",
                    table: "outbox".into(),
                    live_rows: 0,
                    dead_rows: 12,
                    megabytes: 1.5,
                    last_autovacuum: None,
                }],
                plans: vec![large::Plan {
                    database: "read",
                    what: "product sales",
                    plan: "Index Scan using product_sales_view_pkey (rows<2)".into(),
                }],
                maintenance: large::Maintenance {
                    orders: 1_050_000,
                    verify_status: "consistent".into(),
                    verify_keys: 3_200_000,
                    verify_seconds: 40.0,
                    verify_keys_per_s: 80_000.0,
                    verify_orders_per_s: 26_250.0,
                    rebuild_rows: 3_200_000,
                    rebuild_build_seconds: 50.0,
                    rebuild_rows_per_s: 64_000.0,
                    rebuild_seconds: 52.0,
                    rebuild_swap_ms: 80.0,
                },
            }),
        }
    }

    #[test]
    fn the_report_holds_every_figure_and_a_plot_per_chart_with_its_legend() {
        let page = html(&report()).unwrap();
        if let Ok(dir) = std::env::var("BENCH_REPORT_SAMPLE") {
            std::fs::write(format!("{dir}/report.html"), &page).unwrap();
        }
        // Rate and latency for burst, sustained, lookups and the freshness orders, the freshness scatter,
        // each twice but burst and sustained (small and large tables), and the CPU split.
        assert_eq!(page.matches("<svg").count(), 15);
        for text in [
            "burst: latency per second (ms)",
            "freshness lag at 350 orders/s (ms)",
            "large tables: freshness lag at 350 orders/s (ms)",
            "large tables: lookups: latency per second (ms)",
            "p99",
            "postgres analytics_write",
            "large: lookups",
            "/api/analytics/sync-status",
            "<td>outbox</td>",
        ] {
            assert!(page.contains(text), "the report lacks {text:?}");
        }
        assert!(page.contains("<code>select 1 where 2 &lt; 3</code>"), "statements are escaped");
        assert!(page.contains("<pre>Index Scan using product_sales_view_pkey (rows&lt;2)</pre>"), "plans are escaped");
        assert!(page.contains("0.35"), "the ratio to the bare transaction is in the table");
        assert!(page.contains("64000 rows/s") && page.contains("80000 keys/s"), "rebuild and verify rates");
        assert!(!page.contains("postgres postgres"), "accounts that used nothing stay out of the CPU plot");
    }
}
