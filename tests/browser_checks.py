"""What every browser test asks of a page: screenshots at both sizes, no sideways scrolling, no serious or
critical accessibility violation (axe-core, vendored under tests/vendor/axe-core with its MPL-2.0 licence)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ARTIFACTS

#: The two sizes every page is looked at: a laptop and a phone (issue 17).
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
#: The impacts that fail a test; "minor" and "moderate" are reported in the message, not failed on.
FAILING_IMPACTS = {"serious", "critical"}


def new_page(browser, size: str, **context_options):
    """A page in a fresh context (its own cookies) at one of ``VIEWPORTS``; phones get touch and a mobile UA
    width so ``meta viewport`` applies as on a phone."""
    viewport = VIEWPORTS[size]
    options = {"viewport": viewport, **context_options}
    if size == "phone":
        options.update(is_mobile=True, has_touch=True, device_scale_factor=2)
    page = browser.new_context(**options).new_page()
    page.set_default_timeout(20_000)
    return page


def shoot(page, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/<name>-<width>x<height>.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    size = page.viewport_size
    path = ARTIFACTS / f"{name}-{size['width']}x{size['height']}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def horizontal_overflow(page) -> tuple[int, int]:
    """(document scrollWidth, innerWidth): the page scrolls sideways when the first is the larger."""
    return tuple(page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]"))


def assert_fits(page, name: str = "") -> None:
    scroll_width, inner_width = horizontal_overflow(page)
    assert scroll_width <= inner_width, f"{name or page.url} scrolls sideways: {scroll_width} > {inner_width} px"


def axe_violations(page, impacts: set[str] = FAILING_IMPACTS) -> list[dict]:
    """axe-core's violations on the page as it is now, those with an impact in ``impacts``, each as
    {id, impact, help, targets}."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "targets": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in impacts]


def assert_accessible(page, name: str = "") -> None:
    violations = axe_violations(page)
    assert violations == [], f"axe on {name or page.url}: {violations}"


def check_page(page, name: str) -> None:
    """Screenshot, then the two checks every page must pass at every size."""
    shoot(page, name)
    assert_fits(page, name)
    assert_accessible(page, name)
