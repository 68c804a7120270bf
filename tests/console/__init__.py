"""Browser tests of the operator console (headless Chromium from Debian, driven by Selenium)."""
