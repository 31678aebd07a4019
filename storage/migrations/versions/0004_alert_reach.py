"""alert reach: digests, alerts about the monitor, multi-target channels

``outbox`` rows now carry a ``kind`` (``trial``, ``digest``, ``system``); digest and system
rows have no trial (``trial_id`` becomes nullable) and keep their content in ``payload``;
``done_targets`` records which destinations of a multi-target channel (Apprise URLs) already
have the alert; ``subscription_key`` ties a digest row to its subscription. New tables:
``digest_watermarks`` (per digest subscription: the last event id in a delivered digest) and
``monitor_health`` (consecutive failures and state per subject, for ``system`` alerts).
Existing rows become ``kind = 'trial'``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 21:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False,
                                      server_default='trial'))
        batch_op.add_column(sa.Column('payload', _json(), nullable=True))
        batch_op.add_column(sa.Column('done_targets', _json(), nullable=True))
        batch_op.add_column(sa.Column('subscription_key', sa.String(length=160), nullable=True))
        batch_op.alter_column('trial_id', existing_type=sa.Integer(), nullable=True)
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('kind', server_default=None)
    op.create_table('digest_watermarks',
    sa.Column('subscription_key', sa.String(length=160), nullable=False),
    sa.Column('channel', sa.String(length=128), nullable=False),
    sa.Column('last_event_id', sa.Integer(), nullable=False),
    sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('pending_alert', sa.String(length=64), nullable=True),
    sa.Column('pending_until', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('subscription_key', name=op.f('pk_digest_watermarks'))
    )
    op.create_table('monitor_health',
    sa.Column('subject', sa.String(length=160), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('subject', name=op.f('pk_monitor_health'))
    )


def downgrade() -> None:
    op.drop_table('monitor_health')
    op.drop_table('digest_watermarks')
    op.execute("DELETE FROM outbox WHERE trial_id IS NULL")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('trial_id', existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column('subscription_key')
        batch_op.drop_column('done_targets')
        batch_op.drop_column('payload')
        batch_op.drop_column('kind')
