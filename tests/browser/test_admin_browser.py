"""The admin in a real browser: Debian's headless Chromium driven by Playwright against a live
server. Log in as staff, filter to running jobs, cancel one with the action, see the message and
the new status; open the dashboard and see its charts drawn."""

import pytest
from django.db import transaction
from playwright.sync_api import Browser, Page, expect

from runner_jobs.models import RunnerJob
from tests.factories import UserFactory, WorkspaceFactory, job_in_state

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Jobs are made inside one transaction: their after-commit dispatch then finds them already moved
# on by ``job_in_state`` and sends nothing to the broker.


@pytest.fixture
def staff_page(browser: Browser, live_server) -> Page:
    user = UserFactory(username="stella", is_staff=True, is_superuser=True)
    user.set_password("correct horse")
    user.save()
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("stella")
    return page


def test_staff_filters_running_jobs_and_cancels_one(staff_page: Page, live_server):
    with transaction.atomic():
        workspace = WorkspaceFactory(slug="acme")
        target = job_in_state("running", workspace=workspace)
        other = job_in_state("running", workspace=workspace)
        job_in_state("completed", workspace=workspace)

    page = staff_page
    page.goto(f"{live_server.url}/admin/runner_jobs/runnerjob/")
    page.locator("#changelist-filter a[href*='status__exact=running']").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(2)

    page.check(f"input.action-select[value='{target.pk}']")
    page.select_option("select[name=action]", "cancel_selected")
    page.click("button[name=index]")

    expect(page.locator("ul.messagelist li.success")).to_have_text("Cancelled 1 job.")
    # Still filtered to running: the cancelled job has left the list, the other one is there.
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator(f"input.action-select[value='{other.pk}']")).to_be_visible()

    page.goto(f"{live_server.url}/admin/runner_jobs/runnerjob/{target.pk}/change/")
    expect(page.locator(".field-status_badge .rj-badge")).to_have_text("cancelled")
    expect(page.locator(".field-status_badge .rj-badge")).to_have_css(
        "background-color", "rgb(85, 85, 85)"
    )
    target.refresh_from_db()
    assert target.status == "cancelled"
    assert target.events.order_by("id").last().actor == "staff:stella"
    assert RunnerJob.objects.get(pk=other.pk).status == "running"


def test_staff_opens_the_dashboard_and_sees_its_charts(staff_page: Page, live_server):
    with transaction.atomic():
        job_in_state("completed")
        job_in_state("failed")
        job_in_state("queued")

    page = staff_page
    page.goto(f"{live_server.url}/admin/")
    page.click("#rj-dashboard-link a")
    expect(page).to_have_title("Jobs dashboard | Django site admin")
    charts = page.locator("svg.rj-chart")
    expect(charts).to_have_count(3)
    for i in range(3):
        box = charts.nth(i).bounding_box()
        assert box is not None
        assert box["width"] > 300
        assert box["height"] > 50
    # Drawn with the stylesheet's colours: six status bars, completed in green.
    status_bars = page.locator("#rj-status-chart rect")
    expect(status_bars).to_have_count(7)
    expect(page.locator("#rj-status-chart rect.rj-fill-completed")).to_have_css(
        "fill", "rgb(46, 133, 64)"
    )
    expect(page.locator("#rj-throughput-chart rect.rj-fill-failed")).to_have_count(1)
    expect(page.locator("#rj-queue-depth")).to_have_text("1")
    expect(page.locator("#rj-failing-types")).to_contain_text("boom")
