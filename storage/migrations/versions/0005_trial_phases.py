"""trial phases: the latest version's phases beside its title and status

Adds ``trials.phases`` (the registry's phase enums of the latest version, comma-joined:
``PHASE1,PHASE2``), kept like ``title`` and ``overall_status`` so that ``trialwatch list``
does not parse every trial's stored document to show its phase. Existing trials get it
from their latest version's canonical document, read through SQLAlchemy's JSON index
operator (``json_extract`` on SQLite, ``->`` on PostgreSQL) in batches.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 06:40:00.000000
"""

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phases', sa.String(length=128), nullable=True))
    trials = sa.table('trials', sa.column('id', sa.Integer), sa.column('latest_version', sa.Integer),
                      sa.column('phases', sa.String))
    versions = sa.table('versions', sa.column('trial_id', sa.Integer),
                        sa.column('version', sa.Integer), sa.column('canonical', sa.JSON))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(trials.c.id, versions.c.canonical['design']['phases'])
        .join(versions, (versions.c.trial_id == trials.c.id)
              & (versions.c.version == trials.c.latest_version))).all()
    updates = [{'trial_id': trial_id, 'phases': ','.join(map(str, phases))}
               for trial_id, phases in rows if isinstance(phases, list) and phases]
    statement = (sa.update(trials).where(trials.c.id == sa.bindparam('trial_id'))
                 .values(phases=sa.bindparam('phases')))
    for start in range(0, len(updates), _BATCH):
        bind.execute(statement, updates[start:start + _BATCH])


def downgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('phases')
