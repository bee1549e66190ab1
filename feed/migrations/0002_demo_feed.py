from django.db import migrations


def create_demo_feed(apps, schema_editor):
    Feed = apps.get_model("feed", "Feed")
    Feed.objects.get_or_create(slug="demo", defaults={"title": "Demo feed", "allow_anonymous": True})


class Migration(migrations.Migration):
    dependencies = [("feed", "0001_initial")]

    operations = [migrations.RunPython(create_demo_feed, migrations.RunPython.noop)]
