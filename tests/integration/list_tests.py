#!/usr/bin/python3
"""Prints one line per integration test: its ctest name, a tab, its unittest id.

The tests are found by unittest's own loader (the same one that runs them),
not by reading source text: a test added by a table, a decorator or a base
class is found as it will be run. tests/CMakeLists.txt registers one ctest
per line at configure time, and a ctest runs this again at test time and
fails when the two lists differ, so a test that is not registered fails.

Names: test_receiver.py's ReceiverTest.test_echo_is_answered is
"receiver.test_echo_is_answered" (the module's name without "test_").
A method name found in more than one class of a module is named
prefix.Class.method.

    list_tests.py                 print the list
    list_tests.py --check FILE    fail, naming them, when the tests found now
                                  differ from FILE (the list registered)
"""

import glob
import os
import sys
import unittest


def _cases(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _cases(t)
        else:
            yield t


def list_tests(folder):
    sys.path.insert(0, folder)
    loader = unittest.TestLoader()
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "test_*.py"))):
        module_name = os.path.splitext(os.path.basename(path))[0]
        module = __import__(module_name)
        prefix = module_name[len("test_"):]
        cases = [c for c in _cases(loader.loadTestsFromModule(module))
                 # A test class imported from another module is that module's.
                 if type(c).__module__ == module_name]
        for c in cases:
            if isinstance(c, unittest.loader._FailedTest):
                raise SystemExit("list_tests.py: %s cannot be loaded: %s"
                                 % (module_name, c._exception))
        methods = [c._testMethodName for c in cases]
        for c in cases:
            cls, method = type(c).__name__, c._testMethodName
            name = "%s.%s" % (prefix, method) if methods.count(method) == 1 else \
                "%s.%s.%s" % (prefix, cls, method)
            rows.append((name, "%s.%s.%s" % (module_name, cls, method)))
    names = [n for n, _ in rows]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise SystemExit("list_tests.py: duplicate test names: " + " ".join(dups))
    return rows


def main():
    lines = ["%s\t%s" % row for row in list_tests(os.path.dirname(os.path.abspath(__file__)))]
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2]) as f:
            registered = [l for l in f.read().splitlines() if l]
        missing = sorted(set(lines) - set(registered))
        gone = sorted(set(registered) - set(lines))
        for l in missing:
            print("not registered with ctest: " + l.replace("\t", "  "))
        for l in gone:
            print("registered but no longer a test: " + l.replace("\t", "  "))
        if missing or gone:
            print("re-run cmake (cmake --build does) to register the current tests")
            return 1
        print("all %d integration tests are registered" % len(lines))
        return 0
    if len(sys.argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
