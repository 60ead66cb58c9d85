from reconciler.main import entry

entry()
