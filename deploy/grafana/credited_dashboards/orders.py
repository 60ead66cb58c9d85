"""Dashboards about orders: the pipeline overview, the reconciler, and each payment channel's health.
Every query uses metrics the services expose (a test checks the names)."""

from grafana_foundation_sdk.builders import dashboard, stat
from grafana_foundation_sdk.models.dashboard import VariableRefresh, VariableSort

from credited_dashboards.panels import (
    DATASOURCE,
    PAGE_BURN,
    RATE,
    RED,
    SLO_OBJECTIVE,
    YELLOW,
    board,
    graph,
    quantile,
    single,
)


def overdue_now() -> stat.Panel:
    return single(
        "Overdue now", "short", "sum(reconciler_orders_overdue)", steps=((1, RED),), alerts=("OrdersOverdue",)
    )


def overview() -> dashboard.Dashboard:
    return (
        board("credited-overview", "credited: pipeline overview", "Orders from creation to credit, end to end.")
        .with_row(dashboard.Row("Now"))
        .with_panel(single("Orders created /s", "ops", "sum(rate(payments_orders_created_total[5m]))"))
        .with_panel(
            single(
                "Overdue now", "short", "sum(reconciler_orders_overdue)", steps=((1, RED),), alerts=("OrdersOverdue",)
            )
        )
        .with_panel(
            single(
                "Overdue share, 1 h (SLO: 0.1%)",
                "percentunit",
                "credited:credit_slo_errors:ratio_rate1h",
                steps=((SLO_OBJECTIVE, YELLOW), (PAGE_BURN, RED)),
                alerts=("CreditSLOBurnRate",),
            )
        )
        .with_panel(single("Pay to credit p99", "s", quantile(0.99, "reconciler_pay_to_credit_seconds")))
        .with_panel(
            single(
                "Consumer lag, all groups",
                "short",
                "sum(credited_consumer_lag_records)",
                steps=((1000, YELLOW),),
                alerts=("ConsumerLagHigh",),
            )
        )
        .with_panel(
            single(
                "Dead letters, 1 h",
                "short",
                "sum(increase(credited_dead_letters_total[1h]))",
                steps=((1, YELLOW),),
                alerts=("DeadLetterGrowing",),
            )
        )
        .with_row(dashboard.Row("Flow"))
        .with_panel(
            graph(
                "Orders through the pipeline /s",
                "ops",
                (f"sum(rate(payments_orders_created_total[{RATE}]))", "created"),
                (f"sum(rate(reconciler_orders_paid_total[{RATE}]))", "paid"),
                (f"sum(rate(reconciler_orders_credited_total[{RATE}]))", "credited"),
                (f"sum(rate(reconciler_overdue_flagged_total[{RATE}]))", "flagged overdue"),
            )
        )
        .with_panel(
            graph(
                "Order statuses applied /s",
                "ops",
                (f"sum by (status) (rate(payments_order_status_changes_total[{RATE}]))", "{{status}}"),
                stacked=True,
                alerts=("RemediationFailing", "OrdersEscalated"),
            )
        )
        .with_panel(
            graph(
                "Pay to credit",
                "s",
                (quantile(0.5, "reconciler_pay_to_credit_seconds"), "p50"),
                (quantile(0.99, "reconciler_pay_to_credit_seconds"), "p99"),
            )
        )
        .with_panel(
            graph(
                "Credit SLO: share of paid orders overdue",
                "percentunit",
                ("credited:credit_slo_errors:ratio_rate5m", "5 m"),
                ("credited:credit_slo_errors:ratio_rate1h", "1 h"),
                ("credited:credit_slo_errors:ratio_rate6h", "6 h"),
                description="Objective 0.1% (yellow line); the fast-burn page needs 1.44% over 1 h and 5 m (red).",
                steps=((SLO_OBJECTIVE, YELLOW), (PAGE_BURN, RED)),
                alerts=("CreditSLOBurnRate",),
            )
        )
        .with_panel(
            graph(
                "Provider callbacks /s by outcome",
                "ops",
                (f"sum by (provider, outcome) (rate(payments_callbacks_total[{RATE}]))", "{{provider}} {{outcome}}"),
            )
        )
        .with_panel(
            graph(
                "HTTP requests /s by service and code",
                "reqps",
                (f"sum by (service, code) (rate(credited_http_requests_total[{RATE}]))", "{{service}} {{code}}"),
            )
        )
        .with_panel(
            graph(
                "HTTP p99 by route",
                "s",
                (quantile(0.99, "credited_http_request_duration_seconds", "service, route"), "{{service}} {{route}}"),
            )
        )
        .with_panel(
            graph(
                "Services answering their scrapes",
                "short",
                ('sum by (job) (up{job=~"payments|ledger|reconciler|notifier"})', "{{job}}"),
                description="Instances of each service Prometheus reached at its last scrape; 0 for 2 minutes is "
                "ServiceDown.",
                alerts=("ServiceDown",),
            )
        )
        .with_panel(
            graph(
                "Money audit: orders wrong by kind, and re-drives",
                "short",
                ("max by (kind) (payments_audit_mismatches)", "{{kind}}"),
                (f"sum(increase(payments_audit_redriven_total[{RATE}]))", "re-driven"),
                description="What payments' latest money audit (every 5 minutes, the last day) found wrong; a kind "
                "above 0 for 10 minutes is MoneyAuditMismatch, except refund_failed (its needs_support case pages).",
                steps=((1, RED),),
                alerts=("MoneyAuditMismatch",),
            )
        )
        .with_panel(
            graph(
                "Money audit: time since the last successful run",
                "s",
                ("time() - max(payments_audit_last_run_timestamp_seconds > 0)", "since the last success"),
                description="The audit runs every 5 minutes; none succeeding for 15 minutes is MoneyAuditStale, and "
                "so is none ever (no data here: the audit is not configured or always fails).",
                steps=((900, RED),),
                alerts=("MoneyAuditStale",),
            )
        )
        .with_panel(
            graph(
                "Support cases waiting for an owner, by severity and kind",
                "short",
                (
                    'max by (severity, kind) (payments_support_cases_open{acknowledged="false"})',
                    "{{severity}} {{kind}}",
                ),
                ('sum(max by (severity, kind) (payments_support_cases_open{acknowledged="true"}))', "owned"),
                description="Cases not acknowledged: page is SupportCaseOpen, critical (re-paged after 30 minutes "
                "unowned) SupportCaseUnacknowledged, warning for 5 minutes SupportCaseWarning. The cases API and "
                "`credited console` list them.",
                steps=((1, RED),),
                alerts=("SupportCaseOpen", "SupportCaseUnacknowledged", "SupportCaseWarning"),
            )
        )
        .with_panel(
            graph(
                "Refunds in flight at the providers, by status",
                "short",
                ("max by (status) (payments_refunds_in_flight)", "{{status}}"),
                description="Refunds payments asked for and has no outcome of yet: requested (the provider may not "
                "have it yet), pending (it accepted it and has not finished). Payments keeps asking, with backoff, "
                "until the provider says how each ended.",
            )
        )
        .with_panel(
            graph(
                "Oldest refund in flight: time since it was requested",
                "s",
                ("max(payments_refund_oldest_in_flight_seconds)", "oldest"),
                description="A refund still without an outcome a day after it was requested opens a needs_support "
                "case (red line), which pages as SupportCaseWarning; a line climbing toward it is a refund stuck at "
                "its provider.",
                steps=((86400, RED),),
                alerts=("SupportCaseWarning",),
            )
        )
    )


def reconciler() -> dashboard.Dashboard:
    return (
        board("credited-reconciler", "credited: reconciler", "Overdue detection, remediation and stream progress.")
        .with_panel(
            single(
                "Overdue now", "short", "sum(reconciler_orders_overdue)", steps=((1, RED),), alerts=("OrdersOverdue",)
            )
        )
        .with_panel(
            single(
                "Detection p99 after deadline (objective 1 s)",
                "s",
                quantile(0.99, "reconciler_detection_latency_seconds"),
                steps=((1, RED),),
            )
        )
        .with_panel(
            single(
                "Watermark lag",
                "s",
                "max(reconciler_watermark_lag_seconds)",
                steps=((60, YELLOW), (300, RED)),
                alerts=("ReconcilerStalled",),
            )
        )
        .with_panel(
            graph(
                "Overdue orders now",
                "short",
                ("sum by (instance) (reconciler_orders_overdue)", "{{instance}}"),
                alerts=("OrdersOverdue",),
            )
        )
        .with_panel(
            graph(
                "Flagged overdue /s by channel and cause",
                "ops",
                (f"sum by (channel, cause) (rate(reconciler_overdue_flagged_total[{RATE}]))", "{{channel}} {{cause}}"),
                description="credit_missing: the payment was there by the deadline, the credit was not (pages). "
                "payment_late: the payment reached the reconciler only after the deadline (warns).",
                alerts=("OrdersOverdue", "PaymentsArrivedOverdue", "ChannelDelayRateHigh"),
            )
        )
        .with_panel(
            graph(
                "Detection latency after deadline",
                "s",
                (quantile(0.5, "reconciler_detection_latency_seconds"), "p50"),
                (quantile(0.99, "reconciler_detection_latency_seconds"), "p99"),
                description="Flag time minus the order's deadline, or minus its payment's arrival for a payment "
                "that arrived after the deadline (cause payment_late); the objective is 1 s at p99 (red line).",
                steps=((1, RED),),
            )
        )
        .with_panel(
            graph(
                "Remediations /s by action and outcome",
                "ops",
                (f"sum by (action, outcome) (rate(reconciler_remediations_total[{RATE}]))", "{{action}} {{outcome}}"),
                description="requested when sent; succeeded, failed or escalated once the reconciler learns it.",
                alerts=("RemediationFailing",),
            )
        )
        .with_panel(
            graph(
                "Escalations to a person by reason (last 15 m)",
                "short",
                ("sum by (reason) (increase(reconciler_escalations_total[15m]))", "{{reason}}"),
                description="Orders put in needs_support, each once: nothing automatic touches them again.",
                alerts=("OrdersEscalated",),
            )
        )
        .with_panel(
            graph(
                "Events applied /s by type",
                "ops",
                (f"sum by (type) (rate(reconciler_events_total[{RATE}]))", "{{type}}"),
                alerts=("ReconcilerStalled",),
            )
        )
        .with_panel(
            graph(
                "Anomalies /s by kind",
                "ops",
                (f"sum by (kind) (rate(reconciler_anomalies_total[{RATE}]))", "{{kind}}"),
                alerts=("CreditWithoutPayment",),
            )
        )
        .with_panel(
            graph(
                "Watermark lag",
                "s",
                ("max by (instance) (reconciler_watermark_lag_seconds)", "{{instance}}"),
                description="How far behind the credit stream is known complete; past 5 minutes is ReconcilerStalled.",
                steps=((300, RED),),
                alerts=("ReconcilerStalled",),
            )
        )
        .with_panel(
            graph(
                "Partitions read again /s",
                "ops",
                (
                    f"sum by (instance, reason) (rate(reconciler_partition_reads_again_total[{RATE}]))",
                    "{{instance}} {{reason}}",
                ),
                (f"sum by (instance) (rate(reconciler_records_skipped_total[{RATE}]))", "{{instance}} skipped"),
                (f"sum by (instance) (rate(reconciler_rounds_undone_total[{RATE}]))", "{{instance}} rounds undone"),
                description="A worker reads a partition again from the first record it is missing, after faust "
                "dropped records it had fetched (hole: a later record came first; stuck: standing still below "
                "the end offset), or after the broker refused a round's announcements (the round is undone and "
                "done again). A few around rebalances are expected; a worker that cannot fill a hole in 20 "
                "reads exits with code 75 and is restarted.",
            )
        )
        .with_panel(
            graph(
                "Dead letters and dropped orders /s",
                "ops",
                (f"sum by (kind) (rate(reconciler_dead_lettered_total[{RATE}]))", "dead-lettered {{kind}}"),
                (f"sum(rate(reconciler_orders_expired_total[{RATE}]))", "settled orders dropped"),
                description="Input that does not decode and announcements that cannot be built go to "
                "credited.deadletter with the reason (never stopping a partition). Settled orders leave the "
                "table once RECONCILER_RETENTION_S has passed since they settled.",
            )
        )
    )


def channels() -> dashboard.Dashboard:
    sel = '{channel=~"$channel"}'
    return (
        board("credited-channels", "credited: per-channel health", "Each payment channel's delay rate and latency.")
        .with_variable(
            dashboard.QueryVariable("channel")
            .label("Channel")
            .datasource(DATASOURCE)
            .query("label_values(reconciler_orders_paid_total, channel)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_panel(
            graph(
                "Overdue share by channel, 15 m (alert above 5%)",
                "percentunit",
                (
                    f"sum by (channel) (increase(reconciler_overdue_flagged_total{sel}[15m]))"
                    f" / sum by (channel) (increase(reconciler_orders_paid_total{sel}[15m]))",
                    "{{channel}}",
                ),
                steps=((0.05, RED),),
                width=24,
                alerts=("ChannelDelayRateHigh",),
            )
        )
        .with_panel(
            graph(
                "Payments found by query, not by callback: share by provider, 15 m (alert above 20%)",
                "percentunit",
                (
                    "sum by (provider) (increase(payments_recovered_by_query_total[15m]))"
                    " / (sum by (provider) (increase(payments_recovered_by_query_total[15m]))"
                    ' + sum by (provider) (increase(payments_callbacks_total{outcome="paid"}[15m])))',
                    "{{provider}}",
                ),
                steps=((0.2, RED),),
                width=24,
                alerts=("ProviderCallbacksMissing",),
            )
        )
        .with_panel(
            graph(
                "Payments whose provider's paid_at was clamped to their arrival: by provider, 15 m (alert at 5)",
                "short",
                ("sum by (provider) (increase(payments_paid_at_clamped_total[15m]))", "{{provider}}"),
                steps=((5, RED),),
                width=24,
                alerts=("ProviderClockSkewed",),
            )
        )
        .with_panel(
            graph(
                "Payment queries wait past due this long: how late paid callbacks arrive (at most the query delay)",
                "s",
                ("max by (instance) (payments_query_wait_seconds)", "{{instance}}"),
                width=24,
            )
        )
        .with_panel(
            graph(
                "Paid orders /s by channel",
                "ops",
                (f"sum by (channel) (rate(reconciler_orders_paid_total{sel}[{RATE}]))", "{{channel}}"),
            )
        )
        .with_panel(
            graph(
                "Credited orders /s by channel",
                "ops",
                (f"sum by (channel) (rate(reconciler_orders_credited_total{sel}[{RATE}]))", "{{channel}}"),
            )
        )
        .with_panel(
            graph(
                "Pay to credit p99 by channel",
                "s",
                (quantile(0.99, "reconciler_pay_to_credit_seconds", "channel", sel), "{{channel}}"),
            )
        )
        .with_panel(
            graph(
                "Orders created /s by channel",
                "ops",
                (f"sum by (channel) (rate(payments_orders_created_total{sel}[{RATE}]))", "{{channel}}"),
            )
        )
    )
