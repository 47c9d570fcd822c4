"""Custom components package marker; the test plugin needs it to import our integration."""
