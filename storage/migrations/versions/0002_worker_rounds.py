"""worker rounds: several workers share one cycle; index for events by trial and time

Adds ``cycle_rounds`` (one shared pass over the watched trials per registry data load),
``trials.checked_round`` (the round a trial was last checked in, indexed for leasing),
``cycles.round_id`` (which round a worker's cycle belonged to) and an index on
``events (trial_id, detected_at)`` for "latest change per trial" and per-trial feeds.

Only nullable columns and new tables/indexes: the same plain ALTER TABLE ... ADD COLUMN on
SQLite and PostgreSQL, no table rebuild, existing rows untouched.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:34:13.532331
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'cycle_rounds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('data_timestamp', sa.String(length=64), nullable=True),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('opened_by', sa.String(length=64), nullable=True),
        sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('prep_owner', sa.String(length=64), nullable=True),
        sa.Column('prep_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('prepared_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('strategy', sa.String(length=32), nullable=True),
        sa.Column('stamps', JSON_DOCUMENT, nullable=True),
        sa.Column('workers', sa.Integer(), nullable=False),
        sa.Column('checked', sa.Integer(), nullable=False),
        sa.Column('fetched', sa.Integer(), nullable=False),
        sa.Column('changed', sa.Integer(), nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_cycle_rounds')),
    )
    with op.batch_alter_table('cycle_rounds', schema=None) as batch_op:
        batch_op.create_index('ix_cycle_rounds_data_timestamp', ['data_timestamp'], unique=False)

    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('round_id', sa.Integer(), nullable=True))

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_trial_detected_at', ['trial_id', 'detected_at'],
                              unique=False)

    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checked_round', sa.Integer(), nullable=True))
        batch_op.create_index('ix_trials_checked_round', ['checked_round'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_index('ix_trials_checked_round')
        batch_op.drop_column('checked_round')

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_trial_detected_at')

    with op.batch_alter_table('cycles', schema=None) as batch_op:
        batch_op.drop_column('round_id')

    with op.batch_alter_table('cycle_rounds', schema=None) as batch_op:
        batch_op.drop_index('ix_cycle_rounds_data_timestamp')

    op.drop_table('cycle_rounds')
