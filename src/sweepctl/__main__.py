from sweepctl.cli.app import main

main()
