# Turns iscsi-test-cu's verbose output into one line per test:
#   Suite.Test PASS|FAIL|SKIP
# CUnit counts a skipped test as passed, so a test is SKIP when a
# "[SKIPPED]" line appears before its result.  The result is the first
# "passed" / "FAILED" right after "Test: NAME ..." or at the start of a
# later line; text after it belongs to the test's teardown.
function finish(res) {
	if (name == "")
		return
	if (res == "passed")
		print name, (skipped ? "SKIP" : "PASS")
	else
		print name, "FAIL"
	name = ""
}
/^Suite: / { finish("FAILED"); suite = substr($0, 8); next }
/^  Test: / {
	finish("FAILED")
	line = substr($0, 9)
	i = index(line, " ...")
	name = suite "." substr(line, 1, i - 1)
	rest = substr(line, i + 4)
	skipped = 0
	if (rest ~ /^passed/) { finish("passed"); next }
	if (rest ~ /^FAILED/) { finish("FAILED"); next }
	if (rest ~ /\[SKIPPED\]/) skipped = 1
	next
}
name != "" {
	if ($0 ~ /^passed/) { finish("passed"); next }
	if ($0 ~ /^FAILED/) { finish("FAILED"); next }
	if ($0 ~ /\[SKIPPED\]/) skipped = 1
}
/^Run Summary:/ { finish("FAILED") }
