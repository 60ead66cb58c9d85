from payments.main import entry

entry()
