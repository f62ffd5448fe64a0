# shellcheck shell=bash disable=SC2034  # sourced by sidebyside.sh
# Target "bridle-spool": bench/targets/bridle-ledger.sh with no PostgreSQL (the
# database URL points at a closed port), so every event stays in the spool:
# what the spool alone costs, beside bridle.sh and bridle-ledger.sh.
BRIDLE_LEDGER_VARIANT=spool
# shellcheck source=bench/targets/bridle-ledger.sh disable=SC1091
. "$(dirname "${BASH_SOURCE[0]}")/bridle-ledger.sh"
