from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0005_tierchange_requestlog_degraded"),
    ]

    operations = [
        migrations.AddField(
            model_name="requestlog",
            name="affinity",
            field=models.CharField(
                blank=True,
                choices=[
                    ("hit", "sent to the node that holds the conversation's prompt cache"),
                    (
                        "miss",
                        "a conversation no node holds yet: placed by expected completion time",
                    ),
                    ("rebalanced", "the caching node was too busy: sent elsewhere"),
                ],
                help_text="How conversation affinity placed the request; empty when it was "
                "off or the request was not routed.",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="requestlog",
            name="route",
            field=models.CharField(
                blank=True,
                help_text="Why this node: its expected completion time and the runner-up's "
                "(the X-Clawdbot-Route header).",
                max_length=200,
            ),
        ),
    ]
