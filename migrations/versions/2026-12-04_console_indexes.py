"""Console: indexes for the member page and the ledger explorer, and the sign-in throttle.

- `member_refs_by_member`: the member page lists every external reference of the member;
  member_refs is keyed by the reference, so without this the list is a scan of every reference
  (with the reference as second column, the list comes in order from the index alone).
- `transactions_rare_kinds`: the ledger explorer filtered on a rare kind alone (reversal, expiry,
  conversion) pages newest first; without this it walks the whole time index to fill a page.
  Partial, so the issuances and redemptions that are nearly every row (and every hot write) do
  not maintain it; for those kinds the time index finds a page at once. The console names the
  kind as a constant in its query (from a fixed list), so the planner can match the predicate.
- `audit_log_by_action`: the audit page filtered on an action (e.g. signin.failed).
- `admin_signin_throttle`: failed sign-ins per client address (an IPv6 /64) in the current
  window, shared by every worker (docs/console.md, Security).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from migrations.sql import run_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE INDEX member_refs_by_member ON member_refs (member_id, external_ref);

CREATE INDEX transactions_rare_kinds ON transactions (kind, created_at DESC, transaction_id DESC)
    WHERE kind IN ('reversal', 'expiry', 'conversion');

CREATE INDEX audit_log_by_action ON audit_log (action, seq DESC);

-- `failures` counts the attempts in the window that did not sign in (an attempt is counted
-- before its password is checked and given back when it was right).
CREATE TABLE admin_signin_throttle (
    address      text PRIMARY KEY CHECK (length(address) BETWEEN 1 AND 64),
    window_start timestamptz NOT NULL,
    failures     integer NOT NULL CHECK (failures >= 0)
);
CREATE INDEX admin_signin_throttle_by_window ON admin_signin_throttle (window_start);
"""

DOWNGRADE = r"""
DROP TABLE admin_signin_throttle;
DROP INDEX audit_log_by_action;
DROP INDEX transactions_rare_kinds;
DROP INDEX member_refs_by_member;
"""


def upgrade() -> None:
    run_script(UPGRADE)


def downgrade() -> None:
    run_script(DOWNGRADE)
