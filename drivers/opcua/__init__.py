"""The OPC UA driver: poll or subscribe, None/Sign/SignAndEncrypt, trust list; see README.md."""
