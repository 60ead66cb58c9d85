from notifier.main import entry

entry()
