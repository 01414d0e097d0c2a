"""The console in a real browser: Debian's Chromium driven by Playwright against a real
``sentinel serve`` on SQLite and PostgreSQL. Each test saves screenshots to
target/console-screenshots and checks they show more than a blank page."""

import os
import re
from pathlib import Path

import pytest

from conftest import SCREENSHOTS, USERS
from stores import missing

CHROMIUM = os.environ.get("SENTINEL_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: scripts/console-test installs it")
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is missing: scripts/console-test installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def open_as(browser, console):
    """``open_as(user, **context options)`` → a page signed in as that user."""
    contexts = []

    def make(user, **options):
        ctx = browser.new_context(
            base_url=console.base,
            http_credentials={"username": user, "password": USERS[user][1]},
            **options,
        )
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.js_errors = errors
        return page

    yield make
    for ctx in contexts:
        ctx.close()


def shoot(page, request, step):
    """Saves a screenshot and checks that it shows a rendered page, not a blank one."""
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name.replace("[", "-").replace("]", "")
    path = SCREENSHOTS / f"{name}-{step}.png"
    page.screenshot(path=str(path), full_page=True)
    image = Image.open(path).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None
    total = image.width * image.height
    background = max(count for count, _ in colours)
    assert len(colours) > 16, f"{path}: only {len(colours)} colours"
    assert background < 0.97 * total, f"{path}: {background / total:.1%} of it is one colour"
    return path


def test_an_operator_finds_reconciles_and_resets_an_uncertain_key(console, open_as, request):
    from playwright.sync_api import expect

    ledger = console.make_uncertain("charge-42", namespace="payments")
    console.complete("charge-41", namespace="payments")
    page = open_as("alice")
    page.goto("/")
    expect(page.get_by_role("heading", name="Waiting for an operator")).to_be_visible()
    expect(page.locator("#attention")).to_contain_text("payments/charge-42")
    shoot(page, request, "1-overview")

    page.get_by_role("link", name="payments/charge-42").first.click()
    expect(page.get_by_role("heading", name="charge-42")).to_be_visible()
    expect(page.locator("#record .badge")).to_have_text("uncertain")
    shoot(page, request, "2-record")

    page.get_by_role("link", name="Reconcile…").click()
    expect(page.locator(".callout")).to_contain_text("any late write of the old worker is refused")
    page.get_by_label("Reason").fill("checking the PSP for charge 42")
    shoot(page, request, "3-confirm-reconcile")
    page.get_by_role("button", name="Reconcile").click()
    notice = page.locator(".notice")
    expect(notice).to_contain_text("fencing token")
    token = notice.locator("strong").inner_text()
    assert token == str(console.inspect("charge-42", "payments")["fencing_token"])
    expect(page.locator("#history")).to_contain_text("reconciling")
    expect(page.locator("#history")).to_contain_text("by alice")
    expect(page.locator("#history")).to_contain_text("checking the PSP for charge 42")
    shoot(page, request, "4-reconciling")

    page.get_by_role("link", name="Reset: run again…").click()
    expect(page.locator(".callout")).to_contain_text("the next caller will run this work again")
    page.get_by_label("Reason").fill("PSP has no charge 42")
    page.get_by_role("button", name="Reset: run it again").click()
    expect(page.locator(".notice")).to_contain_text("the next caller runs the work again")
    expect(page.locator("#record")).to_contain_text("has no record")
    expect(page.locator("#history li").last).to_contain_text("reset")
    expect(page.locator("#history li").last).to_contain_text("PSP has no charge 42")
    shoot(page, request, "5-reset")

    assert console.inspect("charge-42", "payments") is None
    console.cli("run", "--key", "charge-42", "--", "sh", "-c", f"echo ran >> {ledger}", namespace="payments")
    assert ledger.read_text().splitlines() == ["ran", "ran"]
    assert page.js_errors == []


def test_the_open_page_follows_a_key_that_changes_state(console, open_as, request):
    from playwright.sync_api import expect

    console.make_uncertain("job-5")
    page = open_as("victor")
    page.goto("/record?key=job-5")
    expect(page.locator("#record .badge")).to_have_text("uncertain")
    page.evaluate("window.__same_document = true")
    expect(page.locator("#live-status")).to_contain_text("Live")

    with console.client("carol") as c:
        r = c.post("/api/v1/reconcile", json={"key": "job-5", "reason": "looking into it"})
        assert r.status_code == 200

    expect(page.locator("#record .badge")).to_have_text("reconciling", timeout=15000)
    expect(page.locator("#history")).to_contain_text("by carol")
    assert page.evaluate("window.__same_document") is True, "updated in place, not reloaded"
    shoot(page, request, "updated")
    assert page.js_errors == []


def test_a_viewer_is_refused_an_action(console, open_as, request):
    from playwright.sync_api import expect

    console.make_uncertain("pay-3")
    page = open_as("victor")
    page.goto("/record?key=pay-3")
    expect(page.locator("#record")).to_contain_text("Viewers cannot act on keys")
    expect(page.get_by_role("link", name="Reconcile…")).to_have_count(0)
    # Even with the form in hand (the confirmation page is a read), the action is refused.
    page.goto("/confirm?action=reconcile&key=pay-3")
    page.get_by_label("Reason").fill("I should not be able to")
    with page.expect_response(lambda r: r.url.endswith("/action")) as posted:
        page.get_by_role("button", name="Reconcile").click()
    assert posted.value.status == 403
    expect(page.locator(".error")).to_contain_text("victor is a viewer")
    shoot(page, request, "refused")
    assert console.inspect("pay-3")["state"] == "uncertain"


def test_a_stored_script_is_shown_as_text_and_never_runs(console, open_as, request):
    from playwright.sync_api import expect

    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    console.complete("xss-1", "printf", "%s", payload)
    console.complete("<script>window.__pwned=3</script>")
    page = open_as("alice")
    page.goto("/record?key=xss-1")
    expect(page.locator("#record pre").first).to_have_text(payload)
    page.goto("/records")
    expect(page.locator("#list")).to_contain_text("<script>window.__pwned=3</script>")
    page.goto("/")
    expect(page.locator("#recent")).to_contain_text("<script>window.__pwned=3</script>")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # Not executed because not markup: the content security policy alone would also stop it,
    # so check the document itself holds no element the stored text could have made.
    own_scripts = page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))")
    assert own_scripts == ["/assets/console.js"], own_scripts
    assert page.locator("img, [onerror]").count() == 0
    shoot(page, request, "escaped")


def test_quotes_and_markup_in_keys_reasons_and_filters_stay_text(console, open_as, request):
    from playwright.sync_api import expect

    key = 'q"><b id=injected>bold</b>'
    console.make_uncertain(key, namespace='ns"x')
    page = open_as("alice")
    page.goto("/records")
    page.get_by_label("Namespace").select_option('ns"x')
    page.get_by_label("Key starts with").fill('q"><b')
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#list")).to_contain_text(key)
    assert page.get_by_label("Key starts with").input_value() == 'q"><b'
    page.locator("#list a").first.click()
    expect(page.get_by_role("heading", name=key)).to_be_visible()
    page.get_by_role("link", name="Reconcile…").click()
    page.get_by_label("Reason").fill('<img src=x onerror="window.__pwned=1"> "quoted"')
    page.get_by_role("button", name="Reconcile").click()
    expect(page.locator("#history")).to_contain_text('<img src=x onerror="window.__pwned=1"> "quoted"')
    assert page.locator("#injected, img, [onerror]").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    shoot(page, request, "quoted")


def test_pages_fit_a_phone_and_work_from_the_keyboard(console, open_as, request):
    from playwright.sync_api import expect

    console.make_uncertain("a-rather-long-key-name-for-a-phone-screen-0123456789", namespace="payments")
    page = open_as("alice", viewport={"width": 390, "height": 844}, is_mobile=True)
    for path in ["/", "/records", "/record?namespace=payments&key=a-rather-long-key-name-for-a-phone-screen-0123456789"]:
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter(el => el.type !== 'hidden' && !el.labels?.length && !el.getAttribute('aria-label')
                          && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map(el => el.outerHTML)""")
        assert unlabelled == [], unlabelled
    shoot(page, request, "phone-record")

    # Keyboard only: skip link first, then through the filter form to a record and its action.
    desktop = open_as("alice")
    desktop.goto("/records?state=uncertain")
    desktop.keyboard.press("Tab")
    expect(desktop.locator(":focus")).to_have_text("Skip to content")
    # Every control is reachable with Tab alone, in order: tab until the prefix field has focus.
    for _ in range(30):
        desktop.keyboard.press("Tab")
        if desktop.evaluate("document.activeElement.name") == "prefix":
            break
    else:
        pytest.fail("Tab never reached the key prefix field")
    desktop.keyboard.type("a-rather")
    desktop.keyboard.press("Enter")
    expect(desktop).to_have_url(re.compile(r"prefix=a-rather"))
    link = desktop.locator("#list a").first
    link.focus()
    desktop.keyboard.press("Enter")
    expect(desktop.get_by_role("link", name="Reconcile…")).to_be_visible()
    desktop.get_by_role("link", name="Reconcile…").focus()
    desktop.keyboard.press("Enter")
    desktop.get_by_label("Reason").focus()
    desktop.keyboard.type("keyboard only")
    desktop.keyboard.press("Enter")
    expect(desktop.locator(".notice")).to_contain_text("fencing token")
    shoot(desktop, request, "keyboard-reconciled")
