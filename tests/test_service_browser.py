"""The reviewer page in a real browser (Debian's chromium under Playwright): log in, search a real CCTV
still with a box drawn by dragging, see the true person among the candidates, record first and second
review (each reviewer first states, in a form that posts it, why they open another's search: no reason ever
appears in a URL), and see both in the supervisor's audit view (after stating why they read it); create and
revoke an API token; watch a new ingest job appear in the job list without a reload.
Screenshots: /tmp/facematch-browser-*.png."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
CHROMIUM = shutil.which("chromium") and "/usr/lib/chromium/chromium"
if not CHROMIUM:
    pytest.skip("chromium is not installed (make install: apt-get install chromium)", allow_module_level=True)

import uvicorn  # noqa: E402

from tests.conftest import require_data  # noqa: E402
from tests.test_service import PASSWORD, USERS, service  # noqa: E402,F401 - the module fixture


@pytest.fixture(scope="module")
def base_url(service):  # noqa: F811
    app, _ = service
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _login(page, base_url, username):
    page.goto(f"{base_url}/login")
    page.select_option("#agency", USERS[username][0])  # usernames are unique per agency
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login")


def test_search_review_twice_and_audit_in_chromium(base_url):
    still = require_data("frmdb-dev", "cctv_crops", "043", "Img_03.jpg")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        visited = []  # every URL the browser asks for, images included: none may carry a reason
        page.on("request", lambda request: visited.append(request.url))
        _login(page, base_url, "nina")
        page.goto(f"{base_url}/cases/OP-BROWSER")
        page.set_input_files("#images", str(still))
        canvas = page.locator("canvas.drawbox")
        canvas.wait_for()
        page.wait_for_function("document.querySelector('canvas.drawbox').width > 0")
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.9, steps=5)
        page.mouse.up()
        assert page.input_value("#boxes").startswith("[[")
        page.fill("#reason", "assault outside the station, camera 3 still")
        page.screenshot(path="/tmp/facematch-browser-1-search.png", full_page=True)
        page.click("#runsearch")
        page.wait_for_url("**/searches/*", timeout=120_000)
        page.screenshot(path="/tmp/facematch-browser-2-results.png", full_page=True)
        text = page.inner_text("main")
        assert "candidate 043" in text
        assert "match found" not in text.lower() and "identified" not in text.lower()
        url = page.url
        for reviewer, note in (("rita", "same ear shape and hairline"), ("ravi", "agree: nose and brow")):
            page.click("#logout")
            _login(page, base_url, reviewer)
            if reviewer == "ravi":  # from the review queue: its link's candidate anchor outlives the reason form
                page.goto(f"{base_url}/queue")
                page.click(f'a[href="{urlsplit(url).path}#p1-custody-1"]')
            else:
                page.goto(url)
            if reviewer == "rita":  # nina's link carries nina's consultation: rita is asked for her own reason
                assert "not one of your current session's" in page.inner_text("main")
                page.screenshot(path="/tmp/facematch-browser-2b-consult-form.png", full_page=True)
            page.fill("#consult-reason", f"two-person review by {reviewer}")  # another's search: a reason first
            page.click("#consult")
            page.wait_for_url("**/searches/*?c=*")  # a POST, then a redirect to an opaque consultation id
            assert "reason" not in page.url and "review" not in page.url.split("?", 1)[1]
            if reviewer == "ravi":
                assert page.url.endswith("#p1-custody-1"), page.url
            first = page.locator("#p1-custody-1")
            assert "possible match" not in first.locator("ul").inner_text()  # blind to the first review
            first.focus()
            page.keyboard.press("p")
            page.keyboard.type(note)
            with page.expect_navigation():  # the review posts, then redirects back: wait for that page, not the old
                page.keyboard.press("Enter")
            page.wait_for_load_state()
        page.wait_for_load_state("networkidle")
        broken = page.evaluate("Array.from(document.images).filter(i => !i.complete || !i.naturalWidth)"
                               ".map(i => i.src)")
        assert not broken, broken  # the faces shown come within the reviewer's consultation
        page.screenshot(path="/tmp/facematch-browser-3-reviewed.png", full_page=True)
        assert "investigative lead" in page.locator("#p1-custody-1").inner_text()
        page.click("#logout")
        _login(page, base_url, "sue")
        page.goto(f"{base_url}/audit")
        assert page.locator("#audit").count() == 0  # nothing shown before a reason is stated
        page.fill("#audit-reason", "weekly check of two-person reviews")
        page.click("#auditfilter")
        page.wait_for_url("**/audit?*k=*")
        assert "weekly" not in page.url and "reason" not in page.url
        audit = page.inner_text("#audit")
        page.screenshot(path="/tmp/facematch-browser-4-audit.png", full_page=True)
        assert "review.first" in audit and "review.second" in audit and "rita" in audit and "ravi" in audit
        assert "two-person review by rita" in audit and "weekly check of two-person reviews" in audit
        assert all("reason=" not in url for url in visited), visited
        browser.close()


def test_agency_admin_page_and_crime_scene_ingest_in_chromium(base_url):
    """North's admin adds and disables a user on /admin (reasons required) and sees none of south's people;
    north's operator ingests a crime-scene still for a case from the ingest page and watches it finish."""
    still = require_data("frmdb-dev", "cctv_crops", "044", "Img_02.jpg")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        _login(page, base_url, "adam")
        page.click("text=Admin")
        form = page.locator("#adduser")
        form.locator("input[name=username]").fill("nadia")
        form.locator("input[name=password]").fill(PASSWORD)
        form.locator("input[value=investigator]").check()
        form.locator("input[name=reason]").fill("joined north CID")
        form.locator("button").click()
        page.wait_for_url("**/admin")
        row = page.locator("tr", has_text="nadia")
        row.locator("form[action$='/disable'] input[name=reason]").fill("on leave")
        row.locator("form[action$='/disable'] button").click()
        page.wait_for_url("**/admin")
        page.screenshot(path="/tmp/facematch-browser-5-admin.png", full_page=True)
        text = page.inner_text("main")
        assert "nadia" in text and "disabled" in page.locator("tr", has_text="nadia").inner_text()
        assert "sam" not in text.split() and "sara" not in text.split()
        issue = page.locator("#issuetoken")  # an API token for one of north's users, with a reason
        issue.locator("select[name=username]").select_option("nina")
        issue.locator("input[name=label]").fill("case file sync")
        issue.locator("input[name=reason]").fill("nightly case file sync for CID")
        issue.locator("button").click()
        assert "Copy this token now" in page.inner_text("#newtoken") and page.inner_text("#secret").startswith("fm_")
        page.screenshot(path="/tmp/facematch-browser-5b-admin-token.png", full_page=True)
        row = page.locator("#tokens tr", has_text="case file sync")
        assert "nina" in row.inner_text() and "active" in row.inner_text()
        row.locator("input[name=reason]").fill("sync moved to the new server")
        row.locator("button").click()
        page.wait_for_url("**/admin")
        assert "revoked" in page.locator("#tokens tr", has_text="case file sync").inner_text()
        assert page.locator("#newtoken").count() == 0  # the secret is never shown again
        page.click("#logout")
        _login(page, base_url, "otto")
        page.goto(f"{base_url}/ingest")
        page.check("input[name=kind][value=scene]")
        page.fill("#case", "OP-BROWSER-SCENE")
        page.set_input_files("input[name=files]", str(still))
        page.click("#startingest")
        playwright.expect(page.locator("#jobtext")).to_contain_text("finished", timeout=180_000)  # no eval: CSP
        page.screenshot(path="/tmp/facematch-browser-6-scene-ingest.png", full_page=True)
        assert "1 of 1 images" in page.inner_text("#jobtext")
        playwright.expect(page.locator("#jobs li").first).to_contain_text("case OP-BROWSER-SCENE: finished 1/1 · started by otto")
        browser.close()


def test_api_token_and_live_ingest_list_in_chromium(base_url, service):  # noqa: F811
    """A user creates an API token on /tokens (shown once, with the warning), sees it listed and revokes it;
    an operator's ingest page lists a job started elsewhere (another tab, another operator) without a reload,
    and pages back to older ingests (the older page keeps itself while it polls)."""
    import httpx

    app, _ = service
    still = require_data("frmdb-dev", "cctv_crops", "045", "Img_02.jpg")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        _login(page, base_url, "ravi")
        page.click("text=API tokens")
        page.fill("#token-label", "weekly export script")
        page.click("#createtoken")
        secret = page.inner_text("#secret")
        assert secret.startswith("fm_") and "Copy this token now" in page.inner_text("#newtoken")
        page.screenshot(path="/tmp/facematch-browser-7-token-created.png", full_page=True)
        me = httpx.get(f"{base_url}/api/me", headers={"Authorization": f"Bearer {secret}"})
        assert me.json()["user"] == "ravi@north"
        row = page.locator("#tokens tr", has_text="weekly export script")
        row.locator("button", has_text="Revoke").click()
        page.wait_for_url("**/tokens")
        assert "revoked" in page.locator("#tokens tr", has_text="weekly export script").inner_text()
        assert secret not in page.content()
        page.screenshot(path="/tmp/facematch-browser-8-token-revoked.png", full_page=True)
        assert httpx.get(f"{base_url}/api/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401

        page.click("#logout")
        _login(page, base_url, "otto")
        page.goto(f"{base_url}/ingest")
        before = page.locator("#jobs li[id^=job-]").count()
        loaded = page.evaluate("performance.timeOrigin")
        other = httpx.Client(base_url=base_url)  # another operator's session starts a job
        csrf = other.post("/api/login", json={"username": "otto", "password": PASSWORD, "agency": "north"}).json()["csrf_token"]
        started = other.post("/api/ingest/scene", headers={"X-CSRF-Token": csrf}, data={"case": "OP-LIVE-LIST"},
                             files=[("files", (still.name, still.read_bytes(), "image/jpeg"))])
        assert started.status_code == 202, started.text
        job = started.json()["id"]
        playwright.expect(page.locator(f"#job-{job}")).to_contain_text("case OP-LIVE-LIST", timeout=10_000)
        assert page.evaluate("performance.timeOrigin") == loaded  # the same page: no reload
        assert page.locator("#jobs li[id^=job-]").count() == before + 1
        page.screenshot(path="/tmp/facematch-browser-9-live-job-list.png", full_page=True)
        playwright.expect(page.locator(f"#job-{job}")).to_contain_text("finished", timeout=180_000)
        page.screenshot(path="/tmp/facematch-browser-10-live-job-finished.png", full_page=True)
        other.close()

        # more than a page of ingests: the older page is reached by its link and stays itself while it polls
        fm = service[1]
        north = fm.accounts.agency_id("north")
        for n in range(55):
            run = fm.catalogue.start_ingest_run("scene", f"/mnt/old-{n}", "otto", agency_id=north, case_ref=f"OP-OLD{n}")
            fm.catalogue.finish_ingest_run(run, "otto", {"processed": 1, "faces_stored": 1, "total": 1})
        newest = [r["id"] for r in fm.catalogue.ingest_runs(north, limit=51)]
        page.goto(f"{base_url}/ingest")
        page.click("#older")
        page.wait_for_url(f"**/ingest?before={newest[49]}")
        page.wait_for_timeout(4500)  # two polling rounds
        assert page.locator("#jobs li").first.get_attribute("id") == f"run-{newest[50]}"
        assert page.locator(f"#run-{newest[0]}").count() == 0 and "Newest ingests" in page.inner_text("main")
        playwright.expect(page.locator(f"#job-{job}")).to_contain_text("case OP-LIVE-LIST")  # its run is older
        page.screenshot(path="/tmp/facematch-browser-11-older-ingests.png", full_page=True)
        browser.close()


def test_calibrated_results_page_shows_the_miss_side_in_chromium(base_url, service, monkeypatch):  # noqa: F811
    """With the committed dev calibration, the search's author sees under the search facts how often each band
    held an enrolled person in the calibration data (an empty band is not "not enrolled")."""
    from tests.test_service import calibrated_search

    made = calibrated_search(service[0], monkeypatch, "043")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        _login(page, base_url, "nina")
        page.goto(f"{base_url}/searches/{made['search_id']}")  # the author: opened with its own reason
        reach = page.locator("p.reach:not(.probe-reach)")
        playwright.expect(reach).to_be_visible()
        text = reach.inner_text()
        assert text.startswith("If the person is enrolled: how often the calibration's comparisons")
        assert "frmdb-dev-cctv (104 mated comparisons): strong " in text and "lfw-pair-images (8,101" in text
        own = page.locator("#reach-1")  # the probe's own quality bin, under its heading
        playwright.expect(own).to_contain_text("searches with probes of this quality reached: frmdb-dev-cctv, "
                                               "probe quality ")
        assert page.locator("#p1-custody-1").is_visible()
        page.screenshot(path="/tmp/facematch-browser-12-miss-side.png")
        browser.close()
