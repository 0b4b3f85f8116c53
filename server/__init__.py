"""The Cubbi Service (Bottle app), installed as the package cubbi_server."""
