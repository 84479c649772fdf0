"""Tests for workbook_check.py: one good template and deliberately bad ones.

    python3 -m unittest test_workbook_check
"""

import copy
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workbook_check as wc  # noqa: E402

GOOD = {
    "version": "Notebook/1.0",
    "items": [
        {"type": 1, "name": "intro", "content": {"json": "## tally usage for {Tenant}"}},
        {
            "type": 9,
            "name": "parameters",
            "content": {
                "version": "KqlParameterItem/1.0",
                "parameters": [
                    {"id": "a1", "version": "KqlParameterItem/1.0", "name": "TimeRange", "type": 4,
                     "value": {"durationMs": 86400000}},
                    {"id": "a2", "version": "KqlParameterItem/1.0", "name": "Resources", "type": 5,
                     "typeSettings": {"resourceTypeFilter": {"microsoft.insights/components": True}}},
                    {"id": "a3", "version": "KqlParameterItem/1.0", "name": "Tenant", "type": 2,
                     "query": "customMetrics | where timestamp {TimeRange} | distinct tostring(customDimensions['tenant.id'])",
                     "crossComponentResources": ["{Resources}"], "queryType": 0,
                     "resourceType": "microsoft.insights/components"},
                ],
            },
        },
        {
            "type": 12,
            "name": "usage group",
            "content": {
                "version": "NotebookGroup/1.0",
                "groupType": "editable",
                "items": [
                    {
                        "type": 3,
                        "name": "usage by meter",
                        "content": {
                            "version": "KqlItem/1.0",
                            "query": "customMetrics\n| where timestamp {TimeRange} and name == 'tally.usage'\n"
                                     "| where tostring(customDimensions['tenant.id']) == '{Tenant}'\n"
                                     "| extend d = dynamic({\"a\": 1})\n"
                                     "| summarize units = sum(valueSum) by meter = tostring(customDimensions.meter), bin(timestamp, 1h)",
                            "size": 0,
                            "title": "Usage of {Tenant:label}",
                            "queryType": 0,
                            "resourceType": "microsoft.insights/components",
                            "crossComponentResources": ["{Resources}"],
                            "timeContextFromParameter": "TimeRange",
                            "visualization": "timechart",
                        },
                    }
                ],
            },
        },
    ],
    "fallbackResourceIds": ["Azure Monitor"],
    "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
}

QUERY_PATH = ("items", 2, "content", "items", 0, "content")


def query_item(wb):
    d = wb
    for k in QUERY_PATH:
        d = d[k]
    return d


class TestWorkbookCheck(unittest.TestCase):
    def check(self, wb, raw=None):
        text = raw if raw is not None else json.dumps(wb, indent=2)
        return wc.check_workbook(text, len(text.encode()))

    def assertError(self, wb, fragment, raw=None):
        errors, _ = self.check(wb, raw)
        self.assertTrue(any(fragment in e for e in errors), f"{fragment!r} not in {errors}")

    def test_good(self):
        errors, warnings = self.check(GOOD)
        self.assertEqual(errors, [])
        self.assertEqual(warnings, [])

    def test_version(self):
        wb = copy.deepcopy(GOOD)
        wb["version"] = "Notebook/2.0"
        self.assertError(wb, 'expected "Notebook/1.0"')

    def test_empty_query_in_group(self):
        wb = copy.deepcopy(GOOD)
        query_item(wb)["query"] = "  "
        self.assertError(wb, "query item without a query")

    def test_query_type_and_resource_type(self):
        wb = copy.deepcopy(GOOD)
        q = query_item(wb)
        del q["queryType"]
        del q["resourceType"]
        q["crossComponentResources"] = []
        self.assertError(wb, "without queryType")
        self.assertError(wb, "without resourceType or crossComponentResources")

    def test_cross_component_resources_are_enough(self):
        wb = copy.deepcopy(GOOD)
        del query_item(wb)["resourceType"]
        self.assertEqual(self.check(wb)[0], [])

    def test_unknown_parameter(self):
        wb = copy.deepcopy(GOOD)
        query_item(wb)["query"] += " | where x == '{Meter}'"
        self.assertError(wb, "{Meter} is not a parameter")

    def test_builtin_time_range_needs_a_parameter(self):
        wb = copy.deepcopy(GOOD)
        wb["items"][1]["content"]["parameters"] = wb["items"][1]["content"]["parameters"][1:]
        self.assertError(wb, "{TimeRange} is not a parameter")
        self.assertError(wb, "timeContextFromParameter 'TimeRange' is not a parameter")

    def test_reference_in_text_and_title(self):
        wb = copy.deepcopy(GOOD)
        wb["items"][0]["content"]["json"] = "Hello {Nobody}"
        query_item(wb)["title"] = "{Ghost:label}"
        self.assertError(wb, "{Nobody} is not a parameter")
        self.assertError(wb, "{Ghost} is not a parameter")

    def test_hard_coded_subscription(self):
        wb = copy.deepcopy(GOOD)
        rid = "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/rg/providers/microsoft.insights/components/ai"
        wb["fallbackResourceIds"] = [rid]
        self.assertError(wb, "hard-coded resource id")
        wb = copy.deepcopy(GOOD)
        query_item(wb)["crossComponentResources"] = [rid.upper()]
        self.assertError(wb, "hard-coded resource id")

    def test_too_many_logs_queries(self):
        wb = copy.deepcopy(GOOD)
        group = wb["items"][2]["content"]["items"]
        for n in range(40):
            extra = copy.deepcopy(group[0])
            extra["name"] = f"q{n}"
            group.append(extra)
        self.assertError(wb, "41 Logs queries; the limit is 40")

    def test_query_too_long(self):
        wb = copy.deepcopy(GOOD)
        query_item(wb)["query"] = "customMetrics | where timestamp {TimeRange}\n" + "| take 1\n" * 400
        self.assertError(wb, "the limit is 3000")

    def test_file_size(self):
        wb = copy.deepcopy(GOOD)
        wb["items"][0]["content"]["json"] = "x" * (501 * 1024)
        self.assertError(wb, "the limit is 512000")
        wb["items"][0]["content"]["json"] = "x" * (150 * 1024)
        errors, warnings = self.check(wb)
        self.assertEqual(errors, [])
        self.assertTrue(warnings)

    def test_not_json(self):
        self.assertError(None, "not JSON", raw='{"version": "Notebook/1.0", ')

    def test_cli(self):
        with tempfile.TemporaryDirectory() as d:
            good = os.path.join(d, "good.workbook.json")
            bad = os.path.join(d, "bad.workbook.json")
            with open(good, "w") as f:
                json.dump(GOOD, f)
            wb = copy.deepcopy(GOOD)
            wb["version"] = "x"
            with open(bad, "w") as f:
                json.dump(wb, f)
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(wc.main([good]), 0)
                self.assertEqual(wc.main([good, bad]), 1)


if __name__ == "__main__":
    unittest.main()
