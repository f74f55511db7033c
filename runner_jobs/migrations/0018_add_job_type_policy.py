"""Per-workspace job type policies (SPEC §8): a new, empty table, so a plain CreateModel; its
unique (workspace, type) constraint is the index the dispatcher probes."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('runner_jobs', '0017_add_job_waiting_expiry_idx'),
        ('workspaces', '0001_create_workspace_and_membership'),
    ]

    operations = [
        migrations.CreateModel(
            name='JobTypePolicy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('type', models.CharField(max_length=64)),
                ('paused', models.BooleanField(default=False)),
                ('max_running', models.PositiveSmallIntegerField(blank=True, null=True, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(1000)])),
                ('updated_by', models.CharField(blank=True, default='', max_length=255)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('workspace', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='job_type_policies', to='workspaces.workspace')),
            ],
            options={
                'verbose_name': 'job type policy',
                'verbose_name_plural': 'job type policies',
                'ordering': ['workspace', 'type'],
                'constraints': [models.UniqueConstraint(fields=('workspace', 'type'), name='job_type_policy_unique'), models.CheckConstraint(condition=models.Q(('max_running__isnull', True), models.Q(('max_running__gte', 1), ('max_running__lte', 1000)), _connector='OR'), name='job_type_policy_max_running_range')],
            },
        ),
    ]
