from vidcli.cli import main

main()
