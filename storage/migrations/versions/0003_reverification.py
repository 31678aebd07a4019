"""re-verification: the data load each trial was last fully fetched in

Adds ``trials.verified_data_at`` (the registry's ``dataTimestamp`` of the trial's last full
fetch), which rolling re-verification orders by. A nullable column: the same plain ALTER
TABLE ... ADD COLUMN on SQLite and PostgreSQL; existing trials start as never verified (the
oldest), so the first cycles after the upgrade re-verify them, a budget at a time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 18:40:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('verified_data_at', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('verified_data_at')
