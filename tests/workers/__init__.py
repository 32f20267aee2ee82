"""Worker processes the crash, step-runner and chaos tests spawn: each commits through a real
store and logs what the store acknowledged, so the test can check it after a kill."""
