"""Dashboards about the plumbing: the notifier's deliveries, Kafka consumer lag, dead letters and outboxes."""

from grafana_foundation_sdk.builders import dashboard

from credited_dashboards.panels import RATE, RED, YELLOW, board, graph, quantile

UNBACKED = (
    "no_payment_fact|payment_fact_mismatch|retry_without_payment_fact|wrong_topic"
    "|unknown_order|order_not_paid|above_amount_paid|refund_mismatch|order_credited"
    "|compensation_mismatch|compensation_above_credit"
)
"""The labels the ledger (RetryCredit, GrantCompensation, a re-drive not on ledger.redrives) and payments (IssueRefund)
count a command no payment stands behind by, as deploy/prometheus/rules/platform.yml's CommandsWithoutPayment selects
them."""


def notifier() -> dashboard.Dashboard:
    failed = 'notifier_deliveries_total{outcome="failed"}'
    finished = 'notifier_deliveries_total{outcome=~"delivered|failed|gone"}'
    return (
        board("credited-notifier", "credited: notifier", "Status changes reaching users' devices.")
        .with_panel(
            graph(
                "Deliveries /s by outcome",
                "ops",
                (f"sum by (outcome) (rate(notifier_deliveries_total[{RATE}]))", "{{outcome}}"),
                stacked=True,
                alerts=("NotificationDeliveryFailing",),
            )
        )
        .with_panel(
            graph(
                "Failing share by channel, 10 m (alert above 5%)",
                "percentunit",
                (
                    f"sum by (channel) (increase({failed}[10m])) / sum by (channel) (increase({finished}[10m]))",
                    "{{channel}}",
                ),
                steps=((0.05, RED),),
                alerts=("NotificationDeliveryFailing",),
            )
        )
        .with_panel(
            graph(
                "Status change to delivered",
                "s",
                (quantile(0.5, "notifier_delivery_latency_seconds", "channel"), "p50 {{channel}}"),
                (quantile(0.99, "notifier_delivery_latency_seconds", "channel"), "p99 {{channel}}"),
                description="The objective is 100 ms at p99 (red line).",
                steps=((0.1, RED),),
            )
        )
        .with_panel(
            graph(
                "Notifier consumer lag and dead letters",
                "short",
                ('sum by (group) (credited_consumer_lag_records{service="notifier"})', "lag {{group}}"),
                (
                    f'sum by (reason_kind) (increase(credited_dead_letters_total{{service="notifier"}}[{RATE}]))',
                    "dead letters {{reason_kind}}",
                ),
                alerts=("ConsumerLagHigh", "DeadLetterGrowing"),
            )
        )
    )


def kafka_and_outbox() -> dashboard.Dashboard:
    return (
        board("credited-kafka-outbox", "credited: Kafka lag and outbox", "Consumers, dead letters and outboxes.")
        .with_panel(
            graph(
                "Dependencies reached by service (0: away; alert after 2 m)",
                "short",
                ("min by (service, dependency) (credited_dependency_ready)", "{{service}} {{dependency}}"),
                description="1 while the service reaches its database or broker, 0 while its retry loops or probes "
                "find it away (its /healthz answers 503 then).",
                steps=((0.5, RED),),
                alerts=("DependencyAway",),
            )
        )
        .with_panel(
            graph(
                "Consumer lag by service and group (alert above 1,000 for 5 m)",
                "short",
                ("sum by (service, group) (credited_consumer_lag_records)", "{{service}} {{group}}"),
                steps=((1000, YELLOW),),
                alerts=("ConsumerLagHigh",),
            )
        )
        .with_panel(
            graph(
                "Most lagging partitions",
                "short",
                ("topk(10, credited_consumer_lag_records)", "{{service}} {{group}} {{topic}}[{{partition}}]"),
                alerts=("ConsumerLagHigh",),
            )
        )
        .with_panel(
            graph(
                "Records consumed /s by group and topic",
                "ops",
                (
                    f"sum by (service, group, topic) (rate(credited_consumer_records_total[{RATE}]))",
                    "{{service}} {{group}} {{topic}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Dead letters by service, group and reason",
                "short",
                (
                    f"sum by (service, group, reason_kind) (increase(credited_dead_letters_total[{RATE}]))",
                    "{{service}} {{group}} {{reason_kind}}",
                ),
                alerts=("DeadLetterGrowing",),
            )
        )
        .with_panel(
            graph(
                "Commands no payment stands behind, and retries parked for their payment",
                "short",
                (
                    "sum by (service, reason) "
                    f'(increase(credited_rejected_messages_total{{reason=~"{UNBACKED}"}}[{RATE}]))',
                    "refused {{service}} {{reason}}",
                ),
                (
                    f"sum by (outcome) (increase(credited_ledger_parked_retries_total[{RATE}]))",
                    "parked retries {{outcome}}",
                ),
                description="RetryCredits and IssueRefunds refused because no payment stands behind them, and "
                "re-drives not on ledger.redrives (wrong_topic): any is CommandsWithoutPayment (a producer's bug or a "
                "forged command). A retry parked then absorbed overtook its payment (normal); an expired one is "
                "refused as no_payment_fact.",
                steps=((1, RED),),
                alerts=("CommandsWithoutPayment", "DeadLetterGrowing"),
            )
        )
        .with_panel(
            graph(
                "Outbox rows waiting",
                "short",
                ("sum by (service) (credited_outbox_backlog_records)", "{{service}}"),
                alerts=("OutboxBacklog",),
            )
        )
        .with_panel(
            graph(
                "Oldest outbox row (alert above 60 s for 2 m)",
                "s",
                ("max by (service) (credited_outbox_oldest_age_seconds)", "{{service}}"),
                steps=((60, YELLOW),),
                alerts=("OutboxBacklog",),
            )
        )
        .with_panel(
            graph(
                "Outbox rows published /s",
                "ops",
                (f"sum by (service) (rate(credited_outbox_published_total[{RATE}]))", "{{service}}"),
                width=24,
            )
        )
    )
