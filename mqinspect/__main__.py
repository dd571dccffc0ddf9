from mqinspect.cli.app import main

main()
