"""The page of ``fastloss view`` in a real browser: headless Chromium draws the 3D surface
(WebGL, in software) and the contour, the buttons switch metric and scale, and the console
stays free of errors. Skipped without Chromium and its driver.

Also a command for the README's picture::

    python tests/viz/test_browser.py surface.html docs/images/view.png
"""

import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

BROWSER = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    BROWSER is None or DRIVER is None, reason="needs chromium and chromedriver"
)
pytest.importorskip("selenium")
RENDERED = "return document.querySelectorAll('.js-plotly-plot .main-svg').length > 0"


def open_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--enable-unsafe-swiftshader",  # WebGL in software, for the 3D surface
        "--window-size=1200,800",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver found here: selenium never downloads one
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


def show(driver, html):
    """Open the page and wait until plotly has drawn it and its WebGL canvas exists."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(Path(html).resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(RENDERED))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.querySelector('.gl-container canvas')")
    )
    time.sleep(0.5)  # the GL scene draws on the next animation frame


def regions(driver):
    """Pixel boxes (left, top, right, bottom) of the 3D scene and of the contour's axes."""
    script = """
        const box = (e) => { const r = e.getBoundingClientRect();
                             return [r.left, r.top, r.right, r.bottom].map(Math.round); };
        return [box(document.querySelector('.gl-container > div')),
                box(document.querySelector('.nsewdrag'))];"""
    return driver.execute_script(script)


def pixels(driver):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def drawn(image, box):
    """Fraction of non-white pixels and number of distinct colours inside ``box``."""
    left, top, right, bottom = box
    part = image[top:bottom, left:right].reshape(-1, 3).astype(np.int32)
    coloured = (part < 235).any(axis=1)
    return float(coloured.mean()), len(np.unique(part @ np.array([65536, 256, 1])))


def click(driver, label):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    (button,) = [
        b for b in driver.find_elements(By.CSS_SELECTOR, ".updatemenu-button") if b.text == label
    ]
    ActionChains(driver).move_to_element(button).click().perform()


def colour_bar_titles(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.colorbar .cbtitle')).map(e => e.textContent)"
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The page of a plane through three small networks, evaluated like `fastloss demo`."""
    from fastloss import Grid, Plane, build_model, evaluate
    from fastloss.viz import view_file

    folder = tmp_path_factory.mktemp("browser")
    torch.manual_seed(0)
    nets = [build_model("mlp", (40,), 10, widths=(16,)) for _ in range(3)]
    x, y = torch.randn(200, 40), torch.randint(0, 10, (200,))
    plane = Plane.through(*nets)
    grid = Grid(x=(-0.5, 1.5, 21), y=(-0.5, 1.5, 21))
    out = folder / "surface.h5"
    evaluate(nets[0], plane, grid, train=(x, y), test=(x[:100], y[:100]), out=out, progress=False)
    return view_file(out, folder / "surface.html")


def check(driver, page) -> dict:
    """Open ``page`` and check what a reader sees; returns the figures checked."""
    show(driver, page)
    image = pixels(driver)
    scene, contour = regions(driver)
    seen = {"contour": drawn(image, contour), "scene": drawn(image, scene)}
    filled, colours = seen["contour"]
    assert filled > 0.95 and colours > 200, seen  # a filled contour
    filled, colours = seen["scene"]
    assert filled > 0.15 and colours > 200, seen  # WebGL drew the surface
    assert colour_bar_titles(driver) == ["train loss"]
    click(driver, "test accuracy (%)")
    click(driver, "linear")
    time.sleep(0.5)
    assert colour_bar_titles(driver) == ["test accuracy (%)"]
    seen["switched"] = drawn(pixels(driver), contour)
    assert seen["switched"][1] > 200, seen
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    return seen


def test_the_page_renders_surface_and_contour_without_errors(page):
    start = time.perf_counter()
    driver = open_browser()
    try:
        check(driver, page)
    finally:
        driver.quit()
    print(f"browser: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":  # python tests/viz/test_browser.py PAGE.html [OUT.png]
    # the same checks on any page, e.g. `fastloss view` of the demo's surface, and its picture
    driver = open_browser()
    try:
        seen = check(driver, sys.argv[1])
        show(driver, sys.argv[1])  # as opened, for the picture
        if len(sys.argv) > 2:
            driver.save_screenshot(sys.argv[2])
    finally:
        driver.quit()
    for name, (filled, colours) in seen.items():
        print(f"{name}: {filled:.1%} of its pixels coloured, {colours} colours")
    print("rendered: no console errors")
