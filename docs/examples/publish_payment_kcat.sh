#!/usr/bin/env bash
# Publish one PaymentSucceeded into credited from another system with kcat: the order id as the key, the
# envelope as headers, the payload as one JSON line. Any Kafka client does the same (docs/contracts.md).
#
#   docs/examples/publish_payment_kcat.sh ORDER_ID USER_ID AMOUNT_MINOR CURRENCY CHANNEL PROVIDER PROVIDER_TXN_ID
#
# KAFKA_BOOTSTRAP (default localhost:9094) and CREDITED_TOPIC (default payments.events) say where to. A broker
# that admits only authenticated clients (docker compose's) takes the settings credited's services read:
# KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT, KAFKA_SASL_MECHANISM (default SCRAM-SHA-512), KAFKA_SASL_USERNAME and
# KAFKA_SASL_PASSWORD (given to kcat as a configuration file, not on its command line).
# AMOUNT_MINOR is in the currency's minor units: 600 CNY is 6.00 yuan, 600 JPY is 600 yen.
set -euo pipefail

if (( $# != 7 )); then
  sed -n '5p' "$0" >&2
  exit 2
fi
order_id=$1 user_id=$2 amount=$3 currency=$4 channel=$5 provider=$6 provider_txn_id=$7
bootstrap=${KAFKA_BOOTSTRAP:-localhost:9094}
topic=${CREDITED_TOPIC:-payments.events}
paid_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# One event id per fact: publishing this same payment again (a retry after a timeout) must carry the same
# id, so derive it from the provider's transaction instead of making a new one each time.
event_id="${provider}:${provider_txn_id}:PaymentSucceeded"

value=$(printf '{"order_id":"%s","user_id":"%s","amount":%d,"currency":"%s","channel":"%s","provider":"%s","provider_txn_id":"%s","paid_at":"%s"}' \
  "${order_id}" "${user_id}" "${amount}" "${currency}" "${channel}" "${provider}" "${provider_txn_id}" "${paid_at}")

security=()
if [[ ${KAFKA_SECURITY_PROTOCOL:-PLAINTEXT} != PLAINTEXT ]]; then
  config=$(mktemp)  # mode 600: the password stays off the command line and out of other users' reach
  trap 'rm -f "${config}"' EXIT
  printf 'security.protocol=%s\nsasl.mechanisms=%s\nsasl.username=%s\nsasl.password=%s\n' "${KAFKA_SECURITY_PROTOCOL}" \
    "${KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}" "${KAFKA_SASL_USERNAME}" "${KAFKA_SASL_PASSWORD}" >"${config}"
  security=(-F "${config}")
fi

# -X acks=all: the broker has the record on every in-sync replica before kcat reports it delivered.
printf '%s\n' "${value}" | kcat "${security[@]}" -P -b "${bootstrap}" -t "${topic}" -k "${order_id}" -X acks=all \
  -H "event_type=PaymentSucceeded" \
  -H "schema_version=1" \
  -H "event_id=${event_id}" \
  -H "correlation_id=${order_id}" \
  -H "occurred_at=${paid_at}" \
  -H "producer=${PRODUCER:-example-platform}"
echo "published PaymentSucceeded for ${order_id} to ${topic} (event ${event_id})"
