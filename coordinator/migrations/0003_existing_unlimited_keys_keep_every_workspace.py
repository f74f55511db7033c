"""Keys made before ``all_workspaces`` existed that list no workspace meant "every workspace":
they keep that meaning, now written down. Batches of 1000 keys, each its own short transaction
(non-atomic migration), keyset by primary key, so a large table is never locked as a whole."""

from django.db import migrations

BATCH_SIZE = 1000

UPDATE_BATCH = """
WITH batch AS (
    SELECT id FROM coordinator_coordinatorkey WHERE id > %s ORDER BY id LIMIT %s
), updated AS (
    UPDATE coordinator_coordinatorkey AS k SET all_workspaces = TRUE
    FROM batch
    WHERE k.id = batch.id
      AND NOT k.all_workspaces
      AND NOT EXISTS (
          SELECT 1 FROM coordinator_coordinatorkey_workspaces AS w WHERE w.coordinatorkey_id = k.id
      )
)
SELECT max(id) FROM batch
"""


def mark_unlimited_keys(apps, schema_editor):
    last = ""
    with schema_editor.connection.cursor() as cursor:
        while True:
            cursor.execute(UPDATE_BATCH, [last, BATCH_SIZE])
            (last,) = cursor.fetchone()
            if last is None:
                return


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("coordinator", "0002_coordinator_key_all_workspaces"),
    ]

    operations = [
        migrations.RunPython(mark_unlimited_keys, migrations.RunPython.noop, elidable=True),
    ]
