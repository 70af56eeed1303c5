#!/usr/bin/env python3
"""The dashboard in a real headless Chromium (Debian's chromium and chromedriver,
driven by Selenium), against a running service.

It opens /dashboard, posts rocket messages over HTTP (POST /messages) and checks
that the page follows them without a reload: a new rocket's row appears, its
speed changes, an explosion is marked. It sorts and filters the table (mouse and
keyboard), opens a rocket's page and checks its speed chart (an SVG with a point
per message) and its missing message ranges, both updating live, then checks the
phone layout. Any error the page logs (a Content-Security-Policy violation
included) fails the test.

    SPACET_URL=http://127.0.0.1:8080 python3 tests/browser/dashboard_test.py

Screenshots go to BROWSER_ARTIFACTS (default target/browser): dashboard.png and
dashboard-rocket.png when it passes, failure.png (with the page's log) when not.
"""

import base64
import datetime
import http.client
import json
import os
import re
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = os.environ.get("SPACET_URL", "http://127.0.0.1:8080").rstrip("/")
ARTIFACTS = os.environ.get(
    "BROWSER_ARTIFACTS",
    os.path.join(os.path.dirname(__file__), "..", "..", "target", "browser"),
)
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
WAIT_S = float(os.environ.get("BROWSER_WAIT_S", "15"))

START = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


# The service's ROCKETS_MAX_WATCHERS, when small enough for the test to take every
# slot (run.sh sets it); 0 leaves that step out.
MAX_WATCHERS = int(os.environ.get("ROCKETS_MAX_WATCHERS_UNDER_TEST", "0"))


def hold_stream():
    """Opens GET /rockets/events and keeps it open (it takes a stream slot)."""
    host, port = urllib.parse.urlsplit(BASE).hostname, urllib.parse.urlsplit(BASE).port
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", "/rockets/events", headers={"Accept": "text/event-stream"})
    response = connection.getresponse()
    if response.status != 200:
        raise Failure(f"GET /rockets/events answered {response.status} to the test's own stream")
    return connection


class Failure(Exception):
    """A check that did not hold, with what was expected."""


def post(channel, number, kind, message):
    """POST /messages; the message time is START plus `number` seconds."""
    stamp = (START + datetime.timedelta(seconds=number)).isoformat().replace("+00:00", "Z")
    body = {
        "metadata": {
            "channel": str(channel),
            "messageNumber": number,
            "messageTime": stamp,
            "messageType": kind,
        },
        "message": message,
    }
    headers = {"Content-Type": "application/json"}
    # A telemetry token (run.sh mints one): POST /messages on the HTTP port needs it.
    if os.environ.get("SPACET_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["SPACET_TOKEN"]
    request = urllib.request.Request(
        f"{BASE}/messages",
        data=json.dumps(body).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status not in (200, 201):
                raise Failure(f"POST /messages answered {response.status} for {body}")
    except urllib.error.HTTPError as error:
        raise Failure(f"POST /messages answered {error.code}: {error.read()[:300]!r} for {body}")


def launched(channel, number, rocket_type, speed, mission):
    post(channel, number, "RocketLaunched", {"type": rocket_type, "launchSpeed": speed, "mission": mission})


def faster(channel, number, by):
    post(channel, number, "RocketSpeedIncreased", {"by": by})


def slower(channel, number, by):
    post(channel, number, "RocketSpeedDecreased", {"by": by})


def exploded(channel, number, reason):
    post(channel, number, "RocketExploded", {"reason": reason})


def digits(text):
    """'1,350' (or '1 350', '1.350') as 1350."""
    cleaned = re.sub(r"[^\d-]", "", text)
    return int(cleaned) if cleaned not in ("", "-") else None


class Dashboard:
    def __init__(self, driver):
        self.driver = driver
        self.steps = []
        self.step_started = None

    def step(self, name):
        now = time.monotonic()
        if self.step_started is not None:
            self.steps[-1] = (self.steps[-1][0], now - self.step_started)
        self.steps.append((name, None))
        self.step_started = now
        print(f"  - {name}", flush=True)

    def finish(self):
        if self.steps and self.step_started is not None:
            self.steps[-1] = (self.steps[-1][0], time.monotonic() - self.step_started)

    def until(self, what, check, timeout=WAIT_S):
        """Polls `check` until it returns a truthy value; fails naming `what`."""
        last = [None]

        def probe(_):
            try:
                value = check()
            except Exception as error:  # a row re-rendered between two reads
                last[0] = repr(error)
                return False
            last[0] = value
            return value

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(probe)
        except TimeoutException:
            raise Failure(f"timed out after {timeout} s waiting for: {what} (last seen: {last[0]!r})")

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def css(self, selector):
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector):
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def row(self, channel):
        rows = self.all(f'#rocket-rows tr[data-channel="{channel}"]')
        return rows[0] if rows else None

    def cell(self, channel, label):
        row = self.row(channel)
        if row is None:
            return None
        for cell in row.find_elements(By.CSS_SELECTOR, "th, td"):
            if cell.get_attribute("data-label") == label:
                return cell.text
        return None

    def shown_channels(self):
        return self.js(
            "return Array.from(document.querySelectorAll('#rocket-rows tr')).map(r => r.dataset.channel)"
        )

    def column(self, label):
        return self.js(
            "return Array.from(document.querySelectorAll(`#rocket-rows [data-label='${arguments[0]}']`))"
            ".map(c => c.textContent)",
            label,
        )

    def sort_header(self, key):
        return self.css(f'th[data-sort="{key}"]')

    def select(self, element_id, value):
        Select(self.css(f"#{element_id}")).select_by_value(value)

    def not_reloaded(self):
        if self.js("return window.__dashboardTestMarker") != "still here":
            raise Failure("the page was reloaded (the marker set at the start is gone)")


def run(driver):
    d = Dashboard(driver)
    a, b, c, e, f, g = (uuid.uuid4() for _ in range(6))
    waiting = uuid.uuid4()

    if MAX_WATCHERS:
        d.step(f"every one of the {MAX_WATCHERS} stream slots taken: the page says it is not live,"
               " then goes live once one frees")
        held = [hold_stream() for _ in range(MAX_WATCHERS)]
        driver.get(f"{BASE}/dashboard")
        d.until("the connection status to say it is not live",
                lambda: d.css("#connection").get_attribute("data-state") == "offline"
                and "Not live" in d.css("#connection").text)
        d.until("the table read all the same", lambda: "No rockets yet" in d.css("#list-empty").text)
        for connection in held:
            connection.close()
        d.until("the page to go live by itself (its retry)",
                lambda: d.css("#connection").get_attribute("data-state") == "live", timeout=40)

    d.step("open /dashboard: the feed connects and the empty table says so")
    driver.get(f"{BASE}/dashboard")
    d.until("the connection status to say Live",
            lambda: d.css("#connection").get_attribute("data-state") == "live", timeout=40)
    d.until("the empty-state message", lambda: d.css("#list-empty").is_displayed()
            and "No rockets yet" in d.css("#list-empty").text)
    d.js("window.__dashboardTestMarker = 'still here'")
    if d.css("#connection").text.strip() != "Live":
        raise Failure(f"connection status reads {d.css('#connection').text!r}, not 'Live'")

    d.step("a launched rocket appears as a new row, without a reload")
    launched(a, 1, "Falcon-9", 500, "ARTEMIS")
    d.until("rocket A's row with speed 500", lambda: digits(d.cell(a, "Speed") or "") == 500)
    row_a = d.row(a)
    if d.cell(a, "Type") != "Falcon-9" or d.cell(a, "Mission") != "ARTEMIS":
        raise Failure(f"rocket A reads type {d.cell(a, 'Type')!r}, mission {d.cell(a, 'Mission')!r}")
    if "In flight" not in d.cell(a, "Status"):
        raise Failure(f"rocket A's status reads {d.cell(a, 'Status')!r}")

    d.step("its speed follows its messages (the same row, updated in place)")
    faster(a, 2, 300)
    d.until("rocket A's speed to become 800", lambda: digits(d.cell(a, "Speed")) == 800)
    if d.row(a) != row_a:
        raise Failure("rocket A's row was replaced instead of updated")
    faster(a, 3, 250)
    slower(a, 6, 100)  # 4 and 5 never arrive
    faster(a, 7, 400)
    d.until("rocket A's speed to become 1350", lambda: digits(d.cell(a, "Speed")) == 1350)
    d.until("rocket A's missing count to become 2", lambda: digits(d.cell(a, "Missing")) == 2)
    d.not_reloaded()

    d.step("more rockets; an explosion is marked as it happens")
    launched(b, 1, "Saturn-V", 1200, "APOLLO")
    faster(b, 2, 800)
    launched(c, 1, "Falcon-Heavy", 900, "ARTEMIS")
    faster(c, 2, 150)
    launched(e, 1, "Falcon-9", 300, "GEMINI")
    slower(e, 2, 100)
    launched(f, 1, "Starship", 2500, "MARS-1")
    for n in range(2, 6):
        faster(f, n, 150 * n)
    launched(g, 1, "Saturn-V", 700, "APOLLO")
    post(waiting, 2, "RocketSpeedIncreased", {"by": 50})  # its launch has not arrived
    d.until("every rocket's row", lambda: len(d.shown_channels()) == 7)
    d.until("the rocket without its launch to await it",
            lambda: "Awaiting launch" in (d.cell(waiting, "Status") or ""))
    exploded(c, 3, "PRESSURE_VESSEL_FAILURE")
    d.until("rocket C's row to be marked exploded",
            lambda: d.row(c).get_attribute("data-status") == "exploded"
            and "is-exploded" in d.row(c).get_attribute("class"))
    status_c = d.cell(c, "Status")
    if "Exploded" not in status_c or "PRESSURE_VESSEL_FAILURE" not in status_c:
        raise Failure(f"rocket C's status cell reads {status_c!r}, not the explosion and its reason")
    d.until("the explosion to be announced to screen readers",
            lambda: str(c) in d.css("#announcements").get_attribute("textContent"))
    d.until("the totals to count one explosion", lambda: d.css("#stat-exploded").text == "1")
    d.not_reloaded()

    d.js("window.scrollTo(0, 0)")
    settle(d)
    full_page_screenshot(driver, os.path.join(ARTIFACTS, "dashboard.png"))

    d.step("sort by speed with the column header (mouse, then keyboard)")
    speed_header = d.sort_header("speed")
    speed_header.find_element(By.TAG_NAME, "button").click()
    d.until("aria-sort=descending on Speed", lambda: speed_header.get_attribute("aria-sort") == "descending")
    speeds = [digits(t) for t in d.column("Speed")]
    if speeds != sorted(speeds, reverse=True):
        raise Failure(f"speeds are not highest first: {speeds}")
    if d.shown_channels()[0] != str(f):
        raise Failure(f"the fastest rocket (F, 4,600) is not first: {d.column('Speed')}")
    speed_header.find_element(By.TAG_NAME, "button").send_keys(Keys.ENTER)
    d.until("aria-sort=ascending on Speed", lambda: speed_header.get_attribute("aria-sort") == "ascending")
    speeds = [digits(t) for t in d.column("Speed")]
    if speeds != sorted(speeds):
        raise Failure(f"speeds are not lowest first: {speeds}")
    if d.sort_header("channel").get_attribute("aria-sort") is not None:
        raise Failure("the Channel header still claims to sort the table")
    if "sort=speed" not in driver.current_url or "order=asc" not in driver.current_url:
        raise Failure(f"the address does not keep the sort: {driver.current_url}")
    # Live changes keep their place in the order.
    slower(e, 3, 400)  # E: 200 -> -200, now the slowest
    d.until("rocket E to move to the top (slowest)", lambda: d.shown_channels()[0] == str(e))

    d.step("filter by status, type, mission and channel search")
    d.select("filter-status", "exploded")
    d.until("only rocket C under 'Exploded'", lambda: d.shown_channels() == [str(c)])
    if "status=exploded" not in driver.current_url:
        raise Failure(f"the address does not keep the filter: {driver.current_url}")
    if "Showing 1 of 7 rockets" not in d.css("#list-summary").text:
        raise Failure(f"the summary reads {d.css('#list-summary').text!r}")
    d.select("filter-status", "")
    d.until("the type filter to offer Saturn-V",
            lambda: "Saturn-V" in [o.get_attribute("value") for o in d.all("#filter-type option")])
    d.select("filter-type", "Saturn-V")
    d.until("only the Saturn-V rockets", lambda: sorted(d.shown_channels()) == sorted([str(b), str(g)]))
    d.select("filter-type", "")
    d.select("filter-mission", "ARTEMIS")
    d.until("only the ARTEMIS rockets", lambda: sorted(d.shown_channels()) == sorted([str(a), str(c)]))
    # A filtered view follows live changes too: a new ARTEMIS rocket joins it.
    h = uuid.uuid4()
    launched(h, 1, "Falcon-9", 100, "ARTEMIS")
    d.until("a new ARTEMIS rocket to join the filtered table", lambda: str(h) in d.shown_channels())
    d.select("filter-mission", "")
    search = d.css("#filter-search")
    search.send_keys(str(b)[:13])
    d.until("only rocket B for its channel's start", lambda: d.shown_channels() == [str(b)])
    search.clear()
    search.send_keys("no-such-channel")
    d.until("the no-match message", lambda: d.css("#list-empty").is_displayed()
            and "No rocket matches" in d.css("#list-empty").text)
    d.css("#filter-clear").click()
    d.until("every rocket back after Clear filters", lambda: len(d.shown_channels()) == 8)
    if search.get_attribute("value") != "":
        raise Failure("Clear filters left the search text")
    d.not_reloaded()

    d.step("open rocket A: its facts, speed chart and missing ranges")
    link = d.row(a).find_element(By.CSS_SELECTOR, "a")
    link.click()
    d.until("the rocket page's address", lambda: driver.current_url.endswith(f"/dashboard/rockets/{a}"))
    d.until("the rocket page", lambda: d.css("#rocket-view").is_displayed()
            and not d.css("#list-view").is_displayed())
    d.until("a chart with 5 points (messages 1, 2, 3, 6, 7)",
            lambda: len(d.all("#chart svg circle.chart-point")) == 5)
    svg = d.css("#chart svg")
    if svg.get_attribute("data-points") != "5" or svg.get_attribute("role") != "img":
        raise Failure(f"the chart says {svg.get_attribute('data-points')} points, role {svg.get_attribute('role')}")
    if not d.all("#chart svg path.chart-line") or not d.all("#chart svg path.chart-gap"):
        raise Failure("the chart has no line, or no dashed gap over messages 4-5")
    d.until("the missing range 4-5", lambda: [li.text for li in d.all("#missing-ranges li")] == ["#4 – #5 (2 messages)"])
    d.until("the speed fact 1,350", lambda: "1,350" in d.css("#rocket-facts").text
            or "1350" in re.sub(r"\D", "", d.css("#rocket-facts").text))
    if "Falcon-9 rocket on ARTEMIS" not in d.css("#rocket-title").text:
        raise Failure(f"the rocket page's title reads {d.css('#rocket-title').text!r}")
    if driver.switch_to.active_element != d.css("#rocket-title"):
        raise Failure("the focus did not move to the rocket page's heading")

    d.step("the rocket page follows new messages live")
    faster(a, 8, 200)
    d.until("a 6th point on the chart", lambda: len(d.all("#chart svg circle.chart-point")) == 6)
    exploded(a, 10, "ENGINE_FAILURE")
    d.until("the explosion on the chart", lambda: len(d.all("#chart svg .chart-explosion")) == 1)
    d.until("the missing ranges 4-5 and 9",
            lambda: [li.text for li in d.all("#missing-ranges li")] == ["#4 – #5 (2 messages)", "#9 (1 message)"])
    d.until("the Exploded badge", lambda: "Exploded" in d.css("#rocket-status").text
            and "ENGINE_FAILURE" in d.css("#rocket-status").text)
    rows = d.all("#message-rows tr")
    if len(rows) != 7 or not rows[0].text.startswith("#10"):
        raise Failure(f"the message table has {len(rows)} rows, first {rows[0].text if rows else None!r}")
    d.not_reloaded()
    d.js("window.scrollTo(0, 0)")
    settle(d)
    full_page_screenshot(driver, os.path.join(ARTIFACTS, "dashboard-rocket.png"))

    d.step("back to the table: the sort is kept and A is marked exploded")
    driver.back()
    d.until("the table again", lambda: d.css("#list-view").is_displayed())
    d.until("rocket A marked exploded", lambda: d.row(a).get_attribute("data-status") == "exploded")
    if d.sort_header("speed").get_attribute("aria-sort") != "ascending":
        raise Failure("the table's sort was lost on the way back")
    d.not_reloaded()

    d.step("an unknown channel's page says so")
    driver.get(f"{BASE}/dashboard/rockets/{uuid.uuid4()}")
    d.until("'Rocket not found'", lambda: d.css("#rocket-title").text == "Rocket not found"
            and d.css("#banner").is_displayed())

    d.step("every control has an accessible name; phone width has no sideways scroll")
    driver.get(f"{BASE}/dashboard")
    d.until("the table loaded", lambda: len(d.shown_channels()) == 8)
    unnamed = d.js("""
        return Array.from(document.querySelectorAll('input, select, button, a[href]'))
          .filter(el => el.offsetParent !== null)
          .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                           || el.textContent.trim()))
          .map(el => el.outerHTML.slice(0, 80));""")
    if unnamed:
        raise Failure(f"controls without an accessible name: {unnamed}")
    # A phone's viewport (a headless window cannot be made that narrow).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    d.until("the card layout (header row hidden, sort select shown)",
            lambda: d.css("#sort-by").is_displayed() and not d.css("#rockets thead").is_displayed())
    width = d.js("return window.innerWidth")
    if width != 390:
        raise Failure(f"the phone viewport is {width} px wide, not 390")
    overflow = d.js("return document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 0:
        raise Failure(f"the page scrolls sideways by {overflow} px at phone width")
    Select(d.css("#sort-by")).select_by_value("speed:desc")
    d.until("the phone sort (speed, highest first)", lambda: d.shown_channels()[0] == str(f))
    full_page_screenshot(driver, os.path.join(ARTIFACTS, "dashboard-phone.png"))
    d.finish()
    return d


def settle(d):
    """Lets the rows' update highlight fade before a screenshot (cosmetic only)."""
    try:
        WebDriverWait(d.driver, 3, poll_frequency=0.1).until(
            lambda _: d.js("return document.querySelectorAll('#list-view:not([hidden]) tr.updated').length") == 0)
    except TimeoutException:
        pass


def full_page_screenshot(driver, path):
    """The whole page, not only the window (Chromium's DevTools capture)."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    with open(path, "wb") as out:
        out.write(base64.b64decode(shot["data"]))


def page_errors(driver):
    """Errors the page logged: script errors, failed loads, CSP violations."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry.get("level") == "SEVERE"
        # The unknown-channel step asks for a rocket that is not there, on purpose.
        and not ("/rockets/" in entry["message"] and " 404 " in entry["message"])
        # The test takes every stream slot on purpose; and (rarely) a page loaded right
        # after another reaches the server before the old page's stream is seen closed.
        and not ("/rockets/events" in entry["message"] and " 429 " in entry["message"])
    ]


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="spacet-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--lang=en-US", "--force-device-scale-factor=1", "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    started = time.monotonic()
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser_start = time.monotonic() - started
    try:
        d = run(driver)
        errors = page_errors(driver)
        if errors:
            raise Failure(f"the page logged errors: {errors}")
    except Exception as error:
        shot = os.path.join(ARTIFACTS, "failure.png")
        try:
            driver.save_screenshot(shot)
            log = driver.get_log("browser")
            with open(os.path.join(ARTIFACTS, "failure-console.json"), "w") as out:
                json.dump(log, out, indent=2)
        except Exception:
            log = []
        print(f"\nFAILED: {error}", file=sys.stderr)
        if not isinstance(error, Failure):
            traceback.print_exc()
        print(f"screenshot: {os.path.abspath(shot)}; address: {driver.current_url}", file=sys.stderr)
        for entry in log[-10:]:
            print(f"  console {entry.get('level')}: {entry.get('message')}", file=sys.stderr)
        print("dashboard browser test: 0 passed, 1 failed")
        driver.quit()
        sys.exit(1)
    driver.quit()
    total = time.monotonic() - started
    print(f"browser started in {browser_start:.1f} s; steps:")
    for name, seconds in d.steps:
        print(f"  {seconds:6.2f} s  {name}")
    print(f"total {total:.1f} s; screenshots in {os.path.abspath(ARTIFACTS)}")
    print("dashboard browser test: 1 passed, 0 failed")


if __name__ == "__main__":
    main()
