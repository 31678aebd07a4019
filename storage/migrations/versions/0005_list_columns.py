"""list columns: each trial's phases and last change, kept beside its title and status

``trialwatch list`` showed each trial's phase by parsing its latest stored document and its
last change by ranking every event of its newest changed version: most of its time on
10,000 trials. Both are now kept on ``trials`` when versions and events are stored:

* ``phases``: the latest version's phase enums, comma-joined (``PHASE1,PHASE2``);
* ``last_change_version`` / ``_kind`` / ``_severity`` / ``_date``: the newest version that
  brought events, its most severe event (then by kind order) and its day (the version's
  posting date, else the day its events were detected).

Existing trials get them from what is stored, through SQLAlchemy's JSON index operator
(``json_extract`` on SQLite, ``->`` on PostgreSQL) and one aggregate over ``events``. The
kind order is this revision's copy (a migration does not change with the code).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 06:40:00.000000
"""

from datetime import UTC
from typing import Any

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_BATCH = 1000
_KINDS = ("status", "results", "enrollment", "dates", "phase", "eligibility", "outcomes",
          "locations", "sponsor", "contacts", "design", "arms", "description", "identifiers",
          "other", "new_trial", "removed")
_SEVERITIES = ("high", "medium", "low")  # most severe first
_PLACES = len(_KINDS) + 1


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phases', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('last_change_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('last_change_kind', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('last_change_severity', sa.String(length=16),
                                      nullable=True))
        batch_op.add_column(sa.Column('last_change_date', sa.String(length=10), nullable=True))
    bind = op.get_bind()
    trials = sa.table('trials', sa.column('id', sa.Integer), sa.column('latest_version', sa.Integer),
                      sa.column('phases', sa.String), sa.column('last_change_version', sa.Integer),
                      sa.column('last_change_kind', sa.String),
                      sa.column('last_change_severity', sa.String),
                      sa.column('last_change_date', sa.String))
    versions = sa.table('versions', sa.column('trial_id', sa.Integer),
                        sa.column('version', sa.Integer), sa.column('canonical', sa.JSON),
                        sa.column('last_update_posted', sa.String))
    events = sa.table('events', sa.column('trial_id', sa.Integer),
                      sa.column('to_version', sa.Integer), sa.column('kind', sa.String),
                      sa.column('severity', sa.String), sa.column('detected_at', sa.DateTime))
    phases = bind.execute(
        sa.select(trials.c.id, versions.c.canonical['design']['phases'])
        .join(versions, (versions.c.trial_id == trials.c.id)
              & (versions.c.version == trials.c.latest_version))).all()
    _update(bind, trials, [{'trial_id': trial_id, 'phases': ','.join(map(str, found))}
                           for trial_id, found in phases if isinstance(found, list) and found])
    newest = (sa.select(events.c.trial_id, sa.func.max(events.c.to_version).label('version'))
              .group_by(events.c.trial_id).subquery())
    rank = (sa.case({name: n * _PLACES for n, name in enumerate(_SEVERITIES)},
                    value=events.c.severity, else_=(len(_SEVERITIES) - 1) * _PLACES)
            + sa.case({name: n for n, name in enumerate(_KINDS)}, value=events.c.kind,
                      else_=len(_KINDS)))
    best = (sa.select(events.c.trial_id, events.c.to_version, sa.func.min(rank),
                      sa.func.max(events.c.detected_at), versions.c.last_update_posted)
            .join(newest, (newest.c.trial_id == events.c.trial_id)
                  & (newest.c.version == events.c.to_version))
            .outerjoin(versions, (versions.c.trial_id == events.c.trial_id)
                       & (versions.c.version == events.c.to_version))
            .group_by(events.c.trial_id, events.c.to_version, versions.c.last_update_posted))
    changes = []
    for trial_id, version, place, detected, posted in bind.execute(best):
        detected = detected.replace(tzinfo=UTC) if detected.tzinfo is None else detected
        changes.append({'trial_id': trial_id, 'last_change_version': version,
                        'last_change_kind': (*_KINDS, 'other')[place % _PLACES],
                        'last_change_severity': _SEVERITIES[place // _PLACES],
                        'last_change_date': (posted or detected.astimezone(UTC).isoformat())[:10]})
    _update(bind, trials, changes)


def _update(bind: sa.engine.Connection, trials: sa.TableClause,
            rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns: dict[str, Any] = {key: sa.bindparam(f'new_{key}') for key in rows[0] if key != 'trial_id'}
    statement = sa.update(trials).where(trials.c.id == sa.bindparam('trial_id')).values(columns)
    bound = [{('trial_id' if key == 'trial_id' else f'new_{key}'): value
              for key, value in row.items()} for row in rows]
    for start in range(0, len(bound), _BATCH):
        bind.execute(statement, bound[start:start + _BATCH])


def downgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        for column in ('last_change_date', 'last_change_severity', 'last_change_kind',
                       'last_change_version', 'phases'):
            batch_op.drop_column(column)
