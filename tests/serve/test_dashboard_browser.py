"""The /dashboard page in headless Chromium (Debian's chromium + chromedriver, nothing downloaded) over
real Ray Serve with fake experts, mounted under a route prefix and with an API key configured.

The browser enters the key, sends a prompt through the playground with a chosen strategy and λ, and
must show the expert the API chooses for the same request, the score of every expert, the answer, and
the decision in the live table. The screenshot goes to $COE_SCREENSHOT_DIR/dashboard.png when set
(the README's image: COE_SCREENSHOT_DIR=docs/images), else to the test's tmp_path.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.serve.conftest import deploy
from tests.unit.helpers import config_dict
from tests.unit.routing_fixtures import fitted_artifact

pytestmark = pytest.mark.serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,1000",
)
KEY = "sk-dashboard-browser"
AUTH = {"authorization": f"Bearer {KEY}"}
PROMPT = "what is 21 plus 9 sum the numbers"
STRATEGY = "cost_aware"
LAMBDA = 0.2
DEADLINE_S = 60
# Traffic from other clients before the playground is used: the live tables must show it too.
BACKGROUND = [
    ("reverse the word lantern and spell it backwards", {}),
    ("what is 12 plus 30 sum the numbers", {"strategy": "keyword"}),
    ("reverse the word meadow and spell it backwards", {"cost_weight": 0.9}),
]


@pytest.fixture(scope="module")
def dashboard_app(ray_serve, tmp_path_factory) -> str:
    # cost_aware weighs quality against price with λ, so the playground's λ reaches a real strategy.
    artifact = fitted_artifact(tmp_path_factory.mktemp("dashboard") / "cost_aware.joblib", strategy=STRATEGY)
    args = config_dict(strategy=STRATEGY, artifact=str(artifact))
    args["server"]["api_keys"] = [KEY]
    args["gateway"] = {"store": "memory://"}
    return deploy(ray_serve, args, {}, name="dashboard", route_prefix="/dash")


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def chat(base: str, prompt: str, **routing) -> dict:
    body = {"model": "coe", "messages": [{"role": "user", "content": prompt}], "max_tokens": 32}
    if routing:
        body["routing"] = routing
    response = httpx.post(f"{base}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def screenshot_path(tmp_path: Path) -> Path:
    folder = Path(os.environ["COE_SCREENSHOT_DIR"]) if os.environ.get("COE_SCREENSHOT_DIR") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "dashboard.png"


def test_playground_shows_the_chosen_expert_and_scores(dashboard_app, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, DEADLINE_S)
    find = browser.find_element

    # The page is open, its data is not: without a key the page asks for one.
    browser.get(f"{dashboard_app}/dashboard")
    wait.until(ec.visibility_of_element_located((By.ID, "auth-message")))
    assert find(By.ID, "strategy").find_elements(By.TAG_NAME, "option") == []

    for prompt, routing in BACKGROUND:
        chat(dashboard_app, prompt, **routing)

    find(By.ID, "api-key").send_keys(KEY)
    find(By.ID, "save-key").click()
    wait.until(ec.invisibility_of_element_located((By.ID, "auth-message")))
    # The strategies come from /dash/dashboard/api/stats: the prefix-relative call with the key worked.
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, f'#strategy option[value="{STRATEGY}"]')))

    def decisions(d) -> list[list[str]]:
        """The live table's rows, newest first, as cell texts. Read in one script: the page re-renders
        the table on every poll, so element handles held across calls would go stale."""
        return d.execute_script(
            "return [...document.querySelectorAll('#decisions tr.decision')]"
            ".map((row) => [...row.cells].map((cell) => cell.textContent));"
        )

    wait.until(lambda d: len(decisions(d)) == len(BACKGROUND))

    find(By.ID, "prompt").send_keys(PROMPT)
    Select(find(By.ID, "strategy")).select_by_value(STRATEGY)
    find(By.ID, "lambda").clear()
    find(By.ID, "lambda").send_keys(str(LAMBDA))
    find(By.ID, "max-tokens").send_keys("32")
    find(By.ID, "send").click()

    wait.until(lambda d: d.find_element(By.ID, "chosen").text.strip() != "")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#scores tr.score-row")) == 3)
    chosen = find(By.ID, "chosen").text.strip()
    # The playground's request shows up in the live table, newest first, with its strategy and choice.
    wait.until(lambda d: len(decisions(d)) == len(BACKGROUND) + 1)
    newest = decisions(browser)[0]
    assert newest[2] == STRATEGY and newest[3] == chosen, newest

    api = chat(dashboard_app, PROMPT, strategy=STRATEGY, cost_weight=LAMBDA)["routing"]
    assert chosen == api["chosen"][0]
    rows = find(By.ID, "scores").find_elements(By.CSS_SELECTOR, "tr.score-row")
    shown = {row.get_attribute("data-expert"): row.find_element(By.CSS_SELECTOR, ".score-value").text for row in rows}
    assert shown == {expert: f"{score:.4f}" for expert, score in api["scores"].items()}
    assert [row.get_attribute("data-expert") for row in rows] == sorted(api["scores"], key=api["scores"].get)[::-1]
    highlighted = [row.get_attribute("data-expert") for row in rows if "is-chosen" in row.get_attribute("class")]
    assert highlighted == [chosen]
    assert f"λ {LAMBDA}" in find(By.ID, "result-meta").text
    assert find(By.ID, "answer").text.startswith(f"[{chosen}]")  # the fake expert's answer names itself

    wait.until(lambda d: len(decisions(d)) == len(BACKGROUND) + 2)  # and the API's, polled in

    # The whole page in the image: the viewport grows to the document's height (resizing the window
    # does not resize a headless viewport).
    height = browser.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1440, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    path = screenshot_path(tmp_path)
    assert browser.save_screenshot(str(path)), f"screenshot not written to {path}"
    assert path.stat().st_size > 10_000
