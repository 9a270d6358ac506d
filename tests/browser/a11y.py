"""Accessibility checks for the browser tests of every view of the example app.

`assert_accessible(page, "what is shown")` is the one axe-core pass: it injects axe-core
(tests/browser/node_modules, from `npm ci` there: ./scripts/setup with its test tools) and runs
the WCAG 2 A and AA rules and axe's best practices over the page as it is, in the light and in
the dark colour scheme (with reduced motion, so that no transition is caught halfway). Any
violation fails the test, printed with its rule, impact, the elements' selectors and axe's
summary of what to fix.

`assert_focus_visible` and `progressbars` read what a keyboard user sees and what a screen
reader is given (Chromium's accessibility tree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from playwright.async_api import Page

AXE_JS = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
INSTALL = "CLIPO_SETUP_TEST_TOOLS=1 ./scripts/setup (or: cd tests/browser && npm ci)"
TAGS = ["wcag2a", "wcag2aa", "best-practice"]
SCHEMES: tuple[Literal["light", "dark"], ...] = ("light", "dark")

RUN = """tags => axe.run(document, {
  runOnly: { type: "tag", values: tags },
  resultTypes: ["violations"],
}).then(results => results.violations.map(v => ({
  id: v.id, impact: v.impact, help: v.help,
  nodes: v.nodes.map(n => ({ target: n.target.join(" "), summary: n.failureSummary })),
})))"""


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for violation in violations:
        lines.append(f"  {violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"]:
            summary = " ".join(node["summary"].split())
            lines.append(f"    {node['target']}: {summary}")
    return "\n".join(lines)


async def violations(page: Page) -> list[dict[str, Any]]:
    """axe's violations of TAGS on the page as it is now."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        assert AXE_JS.is_file(), f"axe-core is not installed: run {INSTALL}"
        await page.add_script_tag(path=str(AXE_JS))
    found: list[dict[str, Any]] = await page.evaluate(RUN, TAGS)
    return found


async def assert_accessible(page: Page, what: str) -> None:
    """No axe violation in `what` the page shows, in either colour scheme. The page is left
    with the browser's own media settings again."""
    report = []
    try:
        for scheme in SCHEMES:
            await page.emulate_media(color_scheme=scheme, reduced_motion="reduce")
            if found := await violations(page):
                report.append(f"{what}, {scheme} scheme:\n{describe(found)}")
    finally:
        await page.emulate_media(color_scheme="null", reduced_motion="null")
    assert not report, "axe-core found accessibility violations:\n" + "\n".join(report)


# What the focused element shows. The file input is see-through (the drop zone is what people
# see), so the drop zone around it must show its focus; the <video> keeps the focus while Tab
# walks through its native controls, whose focus ring Chromium draws itself.
FOCUS = """() => {
  const focused = document.activeElement;
  const shown = focused.closest(".dropzone") ?? focused;
  const style = getComputedStyle(shown);
  return {
    element: focused.id ? `#${focused.id}` : focused.outerHTML.slice(0, 80),
    focusVisible: focused.matches(":focus-visible"),
    inNativeControls: focused.tagName === "VIDEO" && !focused.matches(":focus-visible"),
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2,
    boxShadow: style.boxShadow !== "none",
  };
}"""


async def assert_focus_visible(page: Page) -> str:
    """The focused element has a visible focus style (a computed outline of 2 px or more, or a
    box-shadow, on :focus-visible); what is focused, for messages."""
    focus: dict[str, Any] = await page.evaluate(FOCUS)
    if not focus["inNativeControls"]:
        assert focus["focusVisible"], f"{focus['element']} is focused without :focus-visible"
        assert focus["outline"] or focus["boxShadow"], f"{focus['element']} shows no focus ring"
    element: str = focus["element"]
    return element


@dataclass(frozen=True)
class Progressbar:
    name: str
    value: float
    min: float
    max: float


async def progressbars(page: Page) -> list[Progressbar]:
    """The progress bars a screen reader is told about (shown ones), from Chromium's tree."""
    cdp = await page.context.new_cdp_session(page)
    try:
        tree = await cdp.send("Accessibility.getFullAXTree")
    finally:
        await cdp.detach()
    found = []
    for node in tree["nodes"]:
        if node.get("ignored") or node.get("role", {}).get("value") != "progressbar":
            continue
        props = {p["name"]: p["value"].get("value") for p in node.get("properties", [])}
        found.append(
            Progressbar(
                name=node.get("name", {}).get("value", ""),
                value=float(node.get("value", {}).get("value", "nan")),
                min=float(props.get("valuemin", "nan")),
                max=float(props.get("valuemax", "nan")),
            )
        )
    return found
